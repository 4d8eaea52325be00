//! A PgBouncer in front of a server, for tests that must work through a pooler.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{err, free_port, postgres_user_ids, running_as_root, scratch_dir, Error};

/// How PgBouncer hands server connections to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per client connection, for as long as it stays.
    Session,
    /// A server connection per transaction: session state (LISTEN, session advisory
    /// locks, `SET`, named prepared statements before 1.21) does not carry over.
    Transaction,
}

/// A PgBouncer process on a free loopback port, forwarding every database to one server;
/// stopped and its directory removed when dropped. `pgbouncer` must be on `PATH` or in
/// `/usr/sbin` (Debian: `apt-get install pgbouncer`). Every user is let in without a
/// password (`auth_type = trust`), as the throwaway clusters do.
#[derive(Debug)]
pub struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Pgbouncer {
    /// Starts PgBouncer in `mode` in front of the server on `127.0.0.1:server_port`;
    /// returns once it accepts connections.
    pub fn start(server_port: u16, mode: PoolMode) -> Result<Pgbouncer, Error> {
        let program = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| {
                std::env::var_os("PATH").and_then(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join("pgbouncer"))
                        .find(|p| p.is_file())
                })
            })
            .ok_or_else(|| {
                err("pgbouncer not found on PATH or in /usr/sbin: install it (Debian: apt-get install pgbouncer)")
            })?;
        let dir = scratch_dir(&format!("pgbouncer-{server_port}-"))?;
        let port = free_port()?;
        let mode = match mode {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        };
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = {mode}\n\
             max_client_conn = 500\ndefault_pool_size = 40\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        let ini = dir.join("pgbouncer.ini");
        fs::write(&ini, config).map_err(|e| err(format!("cannot write {}: {e}", ini.display())))?;
        fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n")
            .map_err(|e| err(format!("cannot write the user list: {e}")))?;
        let mut command = Command::new(&program);
        // PgBouncer refuses to run as root; it changes user itself when asked.
        if running_as_root() {
            let (uid, gid) = postgres_user_ids()?;
            for file in [dir.clone(), ini.clone(), dir.join("users.txt")] {
                std::os::unix::fs::chown(&file, Some(uid), Some(gid))
                    .map_err(|e| err(format!("cannot give {} to postgres: {e}", file.display())))?;
            }
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // It logs every connection to stderr too; its log file has the same.
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", program.display())))?;
        let mut pgbouncer = Pgbouncer { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = pgbouncer.child.try_wait() {
                let log =
                    fs::read_to_string(pgbouncer.dir.join("pgbouncer.log")).unwrap_or_default();
                return Err(err(format!("pgbouncer exited ({status}): {log}")));
            }
            if Instant::now() > deadline {
                return Err(err("pgbouncer did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pgbouncer)
    }

    /// The URL of `database` through PgBouncer, as superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
