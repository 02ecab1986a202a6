import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.UUID;

/**
 * Connects with a JDBC URL exactly as bi_access returns it (the way Metabase,
 * DBeaver or Tableau's JDBC connector would) and prints a query's rows, one per
 * line, columns separated by '|'. On a database error it prints the SQLSTATE
 * and exits 2, so the caller can tell a refused login from a harness problem.
 *
 * Bound parameters follow as TYPE:VALUE, each bound as an application binds
 * its ids: long (setLong: int8), uuid (setObject with a java.util.UUID) or
 * string (setString: pgjdbc's varchar).
 *
 * Run: java -cp /usr/share/java/postgresql.jar pg_test/JdbcCheck.java JDBC_URL SQL [TYPE:VALUE]...
 */
public class JdbcCheck {
    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: JdbcCheck <jdbc_url> <sql> [type:value]...");
            System.exit(64);
        }
        try (Connection conn = DriverManager.getConnection(args[0]);
             PreparedStatement stmt = conn.prepareStatement(args[1])) {
            for (int i = 2; i < args.length; i++) {
                String[] param = args[i].split(":", 2);
                switch (param[0]) {
                    case "long" -> stmt.setLong(i - 1, Long.parseLong(param[1]));
                    case "uuid" -> stmt.setObject(i - 1, UUID.fromString(param[1]));
                    case "string" -> stmt.setString(i - 1, param[1]);
                    default -> throw new IllegalArgumentException("unknown parameter type " + param[0]);
                }
            }
            ResultSet rs = stmt.executeQuery();
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
