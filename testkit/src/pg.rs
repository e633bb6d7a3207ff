//! A throwaway PostgreSQL cluster: `initdb` in a temporary folder, `postgres` on a free
//! loopback port with trust authentication, one database per test. PostgreSQL refuses to run
//! as root, so under root it runs as `nobody` (through `setpriv`).
//!
//! Durability settings are the server's defaults unless [`Options::fast`] is asked for
//! (`fsync=off`: tests that kill the *ota-server*, not the machine, lose nothing by it; benchmarks
//! keep the defaults).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

/// How to start the cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `fsync=off`, `full_page_writes=off`: for tests.
    pub fast: bool,
}

/// A running cluster.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    as_nobody: bool,
    databases: AtomicU32,
}

const HINT: &str = "PostgreSQL's server programs are needed (Debian: apt-get install postgresql; \
                    scripts/test.sh installs them)";

impl Postgres {
    /// The cluster shared by every test of this process (started on first use, fast
    /// settings).
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| Postgres::start(Options { fast: true }))
    }

    /// Starts a new cluster. Panics, saying what is missing, if it cannot.
    pub fn start(options: Options) -> Postgres {
        let initdb = crate::find_program("initdb", &["/usr/lib/postgresql/*/bin"]).expect(HINT);
        let bin = initdb.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = tempfile::Builder::new().prefix("pg-").tempdir().expect("a temporary folder");
        let as_nobody = crate::is_root();
        if as_nobody {
            chown_nobody(dir.path());
        }
        let pg = Postgres {
            dir,
            bin,
            port: crate::free_port(),
            as_nobody,
            databases: AtomicU32::new(0),
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nmax_connections = 500\nshared_buffers = 64MB\n\
             unix_socket_directories = ''\nlog_min_messages = warning\n",
        );
        conf.push_str(&format!("port = {}\n", pg.port));
        if options.fast {
            conf.push_str("fsync = off\nfull_page_writes = off\n");
        }
        let conf_path = pg.dir.path().join("data/postgresql.auto.conf");
        std::fs::write(&conf_path, conf).expect("writing postgresql.auto.conf");
        if as_nobody {
            chown_nobody(&conf_path);
        }
        pg.start_again();
        pg.watchdog();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of the cluster's programs (as `nobody` under root); panics if it fails.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let out = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} ({HINT})"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut c = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        c.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        c
    }

    /// Starts the server (again, after [`Postgres::stop`] or [`Postgres::kill`]) and waits
    /// until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "60", "start"]);
    }

    /// Stops the server, letting it finish its transactions (`pg_ctl stop -m fast`).
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "stop", "-m", "fast"]);
    }

    /// Stops the server at once, as a crash would (`-m immediate`: it recovers from its
    /// write-ahead log on the next start).
    pub fn kill(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-w", "stop", "-m", "immediate"]);
    }

    /// Stops the cluster when this process is gone, however it ends.
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            ctl = self.command_line("pg_ctl"),
            data = crate::shell_quote(&self.data()),
            dir = crate::shell_quote(&self.dir.path().display().to_string()),
        );
        crate::watchdog(&script);
    }

    /// `program` as a shell command line (its path quoted: the `setpriv` prefix is several
    /// words and must stay so).
    fn command_line(&self, program: &str) -> String {
        let path = crate::shell_quote(&self.bin.join(program).display().to_string());
        if self.as_nobody {
            format!("setpriv --reuid=65534 --regid=65534 --clear-groups -- {path}")
        } else {
            path
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` in database `db` with `psql`; returns its output, one row per line, columns
    /// separated by `|`. Panics if it fails.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let psql = crate::find_program("psql", &[&self.bin.display().to_string()]).expect(HINT);
        let out = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("psql: {e} ({HINT})"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// The database name in one of this cluster's URLs.
    pub fn database_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ =
            self.command("pg_ctl", &["-D", &self.data(), "-w", "stop", "-m", "immediate"]).output();
    }
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534))
        .unwrap_or_else(|e| panic!("cannot hand {} to nobody: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_restarts_and_recovers() {
        let pg = Postgres::start(Options { fast: true });
        let url = pg.create_database();
        let db = Postgres::database_of(&url);
        pg.sql(db, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)");
        assert_eq!(pg.sql(db, "SELECT sum(x) FROM t"), "3");
        pg.kill();
        pg.start_again();
        assert_eq!(pg.sql(db, "SELECT count(*) FROM t"), "2", "committed rows survive a crash");
        pg.stop();
        pg.start_again();
        assert_eq!(pg.sql(db, "SELECT count(*) FROM t"), "2");
    }
}
