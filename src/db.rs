//! Small SPI helpers shared by the modules: every value is a bound argument.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::error::Result;

/// The first column of the first row, or None when there is no row (or the
/// value is NULL). Read-only: it assigns no transaction id, so it also runs
/// on a hot standby (the org lookup of every BI query does).
pub fn first<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Result<Option<T>> {
    Spi::connect(|client| {
        let table = client.select(sql, Some(1), args)?;
        first_of(table)
    })
}

/// The same for a statement that writes (INSERT ... RETURNING).
pub fn first_mut<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Result<Option<T>> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, Some(1), args)?;
        first_of(table)
    })
}

fn first_of<T: FromDatum + IntoDatum>(table: pgrx::spi::SpiTupleTable) -> Result<Option<T>> {
    if table.is_empty() {
        Ok(None)
    } else {
        Ok(table.first().get_one::<T>()?)
    }
}

/// Every value of the first column.
pub fn column<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Result<Vec<T>> {
    Spi::connect(|client| {
        let mut values = Vec::new();
        for row in client.select(sql, None, args)? {
            if let Some(value) = row.get::<T>(1)? {
                values.push(value);
            }
        }
        Ok(values)
    })
}

pub fn exec(sql: &str, args: &[DatumWithOid]) -> Result<()> {
    Spi::run_with_args(sql, args)?;
    Ok(())
}

/// Every row's first two columns as text (NULL as empty).
pub fn text_pairs(sql: &str, args: &[DatumWithOid]) -> Result<Vec<(String, String)>> {
    Spi::connect(|client| {
        let mut pairs = Vec::new();
        for row in client.select(sql, None, args)? {
            pairs.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
            ));
        }
        Ok(pairs)
    })
}
