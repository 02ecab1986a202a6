import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

/**
 * Connects with a JDBC URL exactly as bi_access returns it (the way Metabase,
 * DBeaver or Tableau's JDBC connector would) and prints a query's rows, one per
 * line, columns separated by '|'. On a database error it prints the SQLSTATE
 * and exits 2, so the caller can tell a refused login from a harness problem.
 *
 * Run: java -cp /usr/share/java/postgresql.jar pg_test/JdbcCheck.java JDBC_URL SQL
 */
public class JdbcCheck {
    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: JdbcCheck <jdbc_url> <sql>");
            System.exit(64);
        }
        try (Connection conn = DriverManager.getConnection(args[0]);
             Statement stmt = conn.createStatement();
             ResultSet rs = stmt.executeQuery(args[1])) {
            int columns = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                StringBuilder line = new StringBuilder();
                for (int i = 1; i <= columns; i++) {
                    if (i > 1) {
                        line.append('|');
                    }
                    line.append(rs.getString(i));
                }
                System.out.println(line);
            }
        } catch (SQLException e) {
            System.err.println("SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
            System.exit(2);
        }
    }
}
