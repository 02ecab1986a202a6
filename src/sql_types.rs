//! The SQL types of the surface's arguments and columns that pgrx has no
//! Rust type for: `name`, `regclass`, `name[]` and `cidr[]`. With them a
//! function of the SQL surface is declared once, by its `#[pg_extern]`
//! (src/api.rs), with the exact SQL signature callers and 0.2.0 know.
//!
//! Each arrives as the Rust value bi_access works with (a `String`, an
//! `Oid`, a list of `String`s): PostgreSQL has parsed and checked the
//! value already (a cidr with host bits set, an unknown relation, …).

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::prelude::*;
use pgrx::{impl_sql_translatable, FromDatum, IntoDatum};

/// A `name`: a role or column name, at most NAMEDATALEN - 1 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

/// A `regclass`: the relation's oid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegClass(pub pg_sys::Oid);

/// A `name[]`: column lists. NULL elements are kept as `None` for the
/// callee to refuse with its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names(pub Vec<Option<String>>);

/// A `cidr[]`: network allowlists, each address as `cidr` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidrs(pub Vec<Option<String>>);

impl_sql_translatable!(Name, "name");
impl_sql_translatable!(RegClass, "regclass");
impl_sql_translatable!(Names, "name[]");
impl_sql_translatable!(Cidrs, "cidr[]");

impl FromDatum for Name {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: a non-NULL `name` datum points at a NameData, whose bytes
        // end with a NUL (namein and namestrcpy guarantee it).
        let name = unsafe { CStr::from_ptr(datum.cast_mut_ptr::<pg_sys::NameData>().cast()) };
        Some(Name(name.to_string_lossy().into_owned()))
    }
}

impl IntoDatum for Name {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = std::ffi::CString::new(self.0).ok()?;
        // SAFETY: namein copies (and truncates) a NUL-terminated string
        // into a palloc'd NameData of the current memory context.
        unsafe {
            pgrx::fcinfo::direct_function_call_as_datum(
                pg_sys::namein,
                &[text.as_c_str().into_datum()],
            )
        }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::NAMEOID
    }
}

impl FromDatum for RegClass {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a regclass is an oid, passed by value.
        (!is_null).then(|| RegClass(unsafe { pg_sys::Oid::from_datum(datum, false) }.unwrap()))
    }
}

impl IntoDatum for RegClass {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        self.0.into_datum()
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::REGCLASSOID
    }
}

/// An array argument, each element as its type prints it.
macro_rules! array_as_text {
    ($($ty:ident),*) => {$(
        impl FromDatum for $ty {
            unsafe fn from_polymorphic_datum(
                datum: pg_sys::Datum,
                is_null: bool,
                _typoid: pg_sys::Oid,
            ) -> Option<Self> {
                // SAFETY: a non-NULL datum of this argument is an array of
                // the type its SqlTranslatable declares.
                (!is_null).then(|| $ty(unsafe { elements_as_text(datum) }))
            }
        }
    )*};
}

array_as_text!(Names, Cidrs);

/// Each element of a one-dimensional array as its type's output function
/// prints it (a `name` as itself, a `cidr` in its canonical form).
///
/// # Safety
/// `datum` is a non-NULL array datum.
unsafe fn elements_as_text(datum: pg_sys::Datum) -> Vec<Option<String>> {
    // SAFETY: the caller hands an array datum; detoasting copies it if
    // it is compressed or out of line, and the rest reads it in place.
    unsafe {
        let array = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()).cast::<pg_sys::ArrayType>();
        let element_type = (*array).elemtype;
        let (mut length, mut by_value, mut align) = (0i16, false, 0 as std::ffi::c_char);
        pg_sys::get_typlenbyvalalign(element_type, &mut length, &mut by_value, &mut align);
        let (mut output, mut varlena) = (pg_sys::InvalidOid, false);
        pg_sys::getTypeOutputInfo(element_type, &mut output, &mut varlena);
        let mut values = std::ptr::null_mut();
        let mut nulls = std::ptr::null_mut();
        let mut count = 0;
        pg_sys::deconstruct_array(
            array,
            element_type,
            length.into(),
            by_value,
            align,
            &mut values,
            &mut nulls,
            &mut count,
        );
        (0..count as usize)
            .map(|i| {
                (!*nulls.add(i)).then(|| {
                    let text = pg_sys::OidOutputFunctionCall(output, *values.add(i));
                    CStr::from_ptr(text).to_string_lossy().into_owned()
                })
            })
            .collect()
    }
}

/// Each type arrives through FromDatum; NULL is an `Option` argument's.
macro_rules! argument {
    ($($ty:ty),*) => {$(
        // SAFETY: the value is read by the type's FromDatum above, which
        // reads the datum as the SQL type its SqlTranslatable declares.
        unsafe impl<'fcx> ArgAbi<'fcx> for $ty {
            unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                // SAFETY: as above.
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }
        }
    )*};
}

argument!(Name, RegClass, Names, Cidrs);

/// A column of a function's result, through IntoDatum.
macro_rules! column {
    ($($ty:ty),*) => {$(
        // SAFETY: the datum is what the type's IntoDatum makes, of the SQL
        // type its SqlTranslatable declares.
        unsafe impl BoxRet for $ty {
            unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
                match self.into_datum() {
                    // SAFETY: as above.
                    Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
                    None => fcinfo.return_null(),
                }
            }
        }
    )*};
}

column!(Name, RegClass);
