//! A PostgreSQL to run against, for tests, benchmarks and the quickstart.
//!
//! `DATABASE_URL` when it is set; otherwise a throwaway cluster made from the installed
//! PostgreSQL binaries, on a free loopback port, stopped and removed when dropped. Every
//! test gets its own database from [`Postgres::create_database`], so tests run in parallel.
//!
//! The binaries are looked for on `PATH`, then through `pg_config --bindir`, then under
//! `/usr/lib/postgresql/*/bin` (highest version first). `initdb` refuses to run as root, so
//! as root the cluster is made and run as the `postgres` user through `runuser`.
//!
//! ```no_run
//! # async fn run() -> Result<(), pg_provision::Error> {
//! let postgres = pg_provision::shared()?;
//! let url = postgres.create_database("my_test").await?;
//! let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod patroni;
mod pgbouncer;

pub use patroni::Patroni;
pub use pgbouncer::{Pgbouncer, PoolMode};

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why no PostgreSQL could be provided.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Error(format!(
                "PostgreSQL: {} ({})",
                db.message(),
                db.code().code()
            )),
            None => Error(format!("PostgreSQL: {e}")),
        }
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// How a throwaway cluster is configured.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Keep PostgreSQL's durability settings (fsync, full page writes). Off by default:
    /// a throwaway cluster for tests does not need to survive a power cut, and is much
    /// faster without. Benchmarks turn it on to measure what production would see.
    pub durable: bool,
    /// How this cluster's commits wait for its standbys ([`Cluster::start_standby`]).
    pub replication: Replication,
}

impl ClusterOptions {
    /// Durable, without standbys.
    pub fn durable() -> ClusterOptions {
        ClusterOptions {
            durable: true,
            ..ClusterOptions::default()
        }
    }
}

/// How a primary's commits wait for its standbys.
///
/// Either way the commit itself is flushed to the primary's WAL before it is confirmed
/// (`synchronous_commit` is `local` or `on`, never `off`), so that killing the primary's
/// processes loses nothing the primary confirmed; what a failover may lose is what the
/// standby had not received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Replication {
    /// No standby is expected; without `durable`, commits do not even wait for the local
    /// WAL (`synchronous_commit = off`).
    #[default]
    None,
    /// Commits wait for the local WAL only (`synchronous_commit = local`): a standby may
    /// lag, and what it had not received when the primary died is lost on failover.
    Asynchronous,
    /// Commits wait until a standby has flushed them (`synchronous_commit = on`,
    /// `synchronous_standby_names = '*'`): a promoted standby has every confirmed commit.
    /// Until a standby connects, commits wait.
    Synchronous,
}

/// A PostgreSQL server: the one named by `DATABASE_URL`, or a throwaway cluster.
#[derive(Debug)]
pub struct Postgres {
    url: String,
    cluster: Option<Cluster>,
}

impl Postgres {
    /// `DATABASE_URL` when set (and not empty), otherwise a new throwaway cluster.
    pub fn from_env_or_throwaway(options: &ClusterOptions) -> Result<Postgres, Error> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Ok(Postgres { url, cluster: None }),
            _ => {
                let cluster = Cluster::start_new(options)?;
                Ok(Postgres {
                    url: cluster.url("postgres"),
                    cluster: Some(cluster),
                })
            }
        }
    }

    /// The URL to connect to: `DATABASE_URL`, or the throwaway cluster's `postgres`
    /// database as superuser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The throwaway cluster, when there is one (tests that stop and restart the server
    /// need it).
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Creates a new, empty database named from `prefix`, the process id and a counter,
    /// and returns its URL. With `DATABASE_URL`, its role needs `CREATEDB`.
    pub async fn create_database(&self, prefix: &str) -> Result<String, Error> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{}_{}_{}",
            sanitize_identifier(prefix),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .map_err(|e| err(format!("cannot connect to {}: {e}", redact_url(&self.url))))?;
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        drop(client);
        let _ = task.await;
        Ok(with_database(&self.url, &name))
    }
}

/// The process-wide server for tests: provisioned on first use, and (when throwaway)
/// stopped and removed when the process exits.
pub fn shared() -> Result<&'static Postgres, Error> {
    static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
    let provisioned = SHARED.get_or_init(|| {
        let postgres =
            Postgres::from_env_or_throwaway(&ClusterOptions::default()).map_err(|e| e.0)?;
        if let Some(cluster) = &postgres.cluster {
            register_exit_cleanup(
                cluster.base.clone(),
                cluster.bin_dir.clone(),
                cluster.as_postgres,
            );
        }
        Ok(postgres)
    });
    provisioned.as_ref().map_err(|e| err(e.clone()))
}

/// A PostgreSQL cluster in a temporary directory, owned by this process.
#[derive(Debug)]
pub struct Cluster {
    base: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    as_postgres: bool,
    options: ClusterOptions,
}

impl Cluster {
    /// Creates and starts a new cluster on a free loopback port.
    pub fn start_new(options: &ClusterOptions) -> Result<Cluster, Error> {
        remove_abandoned_clusters();
        let mut cluster = Cluster::unstarted(options)?;
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        cluster.start_on_a_free_port()?;
        Ok(cluster)
    }

    /// Creates and starts a hot standby of this cluster (`pg_basebackup -R -X stream`),
    /// streaming from it over loopback, on a port of its own. `options` are the
    /// standby's own, for when it is promoted; this cluster's
    /// [`ClusterOptions::replication`] says whether its commits wait for the standby.
    ///
    /// Returns once the standby accepts read-only connections.
    pub fn start_standby(&self, options: &ClusterOptions) -> Result<Cluster, Error> {
        let mut standby = Cluster::unstarted(options)?;
        let data = standby.data_dir();
        let port = self.port.to_string();
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                path_str(&data)?,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        standby.start_on_a_free_port()?;
        Ok(standby)
    }

    /// Promotes this standby to a primary (`pg_ctl promote`), returning once it accepts
    /// writes.
    pub fn promote(&self) -> Result<(), Error> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&data)?, "-w", "-t", "60", "promote"],
        )
    }

    /// Kills the server's processes with SIGKILL, the postmaster first, as a crash of the
    /// machine's PostgreSQL would (no shutdown checkpoint, no goodbye to the standbys or
    /// the clients). [`Cluster::start`] runs crash recovery.
    pub fn kill(&self) -> Result<(), Error> {
        kill_server(&self.data_dir())
    }

    /// Stops (`hold`) or resumes this standby's WAL receiver (SIGSTOP, SIGCONT), as a
    /// network that stops delivering would: the primary goes on committing (or, with
    /// synchronous replication, waiting), and what it commits meanwhile is not on this
    /// standby. What the primary sent meanwhile waits in the kernel's socket buffer and
    /// arrives on resume; [`Cluster::cut_replication`] loses it instead.
    pub fn hold_replication(&self, hold: bool) -> Result<(), Error> {
        signal(
            self.wal_receiver_pid()?,
            if hold { "-STOP" } else { "-CONT" },
        )
    }

    /// Kills this standby's WAL receiver with SIGKILL, and with it whatever the primary
    /// had sent that it had not yet written: a connection cut in the middle. PostgreSQL
    /// restarts the standby's processes, which recover what is on disk and stream again
    /// when a primary answers.
    ///
    /// Returns once the standby accepts connections again, so that a promotion that
    /// follows is not lost in its restart.
    pub fn cut_replication(&self) -> Result<(), Error> {
        let startup = self.child_named("startup");
        signal(self.wal_receiver_pid()?, "-KILL")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            // The restart has begun when the startup process is a new one, and ended when
            // the server accepts connections.
            let restarted = self
                .child_named("startup")
                .is_some_and(|now| Some(now) != startup);
            if restarted && self.accepts_connections() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(err("the standby did not come back within 60 s of the cut"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn child_named(&self, name: &str) -> Option<u32> {
        children_of(self.postmaster_pid().ok()?)
            .into_iter()
            .find(|pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| String::from_utf8_lossy(&line).contains(name))
            })
    }

    fn accepts_connections(&self) -> bool {
        let port = self.port.to_string();
        run_as(
            &self.bin_dir,
            self.as_postgres,
            "pg_isready",
            &["-h", "127.0.0.1", "-p", &port, "-t", "1"],
        )
        .is_ok_and(|out| out.status.success())
    }

    fn wal_receiver_pid(&self) -> Result<u32, Error> {
        self.child_named("walreceiver")
            .ok_or_else(|| err("this cluster runs no WAL receiver: is it a standby?"))
    }

    fn postmaster_pid(&self) -> Result<u32, Error> {
        postmaster_pid(&self.data_dir())
    }

    fn unstarted(options: &ClusterOptions) -> Result<Cluster, Error> {
        let bin_dir = find_bin_dir()?;
        let as_postgres = running_as_root();
        let base = scratch_dir("")?;
        if as_postgres {
            let (uid, gid) = postgres_user_ids()?;
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))
                .map_err(|e| err(format!("cannot give {} to postgres: {e}", base.display())))?;
        }
        Ok(Cluster {
            base,
            bin_dir,
            port: 0,
            as_postgres,
            options: options.clone(),
        })
    }

    fn start_on_a_free_port(&mut self) -> Result<(), Error> {
        // A port found free can be taken before the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| err("cannot start PostgreSQL")))
    }

    /// The URL of database `database` on this cluster, as superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    /// Starts the server (again), on the same port.
    pub fn start(&self) -> Result<(), Error> {
        let mut settings = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c shared_buffers=256MB",
            self.port,
            path_str(&self.base)?
        );
        if !self.options.durable {
            settings.push_str(" -c fsync=off -c full_page_writes=off");
        }
        settings.push_str(match (self.options.replication, self.options.durable) {
            (Replication::None, false) => " -c synchronous_commit=off",
            (Replication::None, true) => "",
            (Replication::Asynchronous, _) => " -c synchronous_commit=local",
            (Replication::Synchronous, _) => {
                " -c synchronous_commit=on -c synchronous_standby_names=*"
            }
        });
        let data = self.data_dir();
        let log = self.base.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-o",
                &settings,
                "-l",
                path_str(&log)?,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|e| {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            err(format!("{e}\nserver log:\n{}", tail.join("\n")))
        })
    }

    /// Stops the server: `mode` is `fast` (clean) or `immediate` (like a crash).
    pub fn stop(&self, mode: &str) -> Result<(), Error> {
        let data = self.data_dir();
        self.run(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", mode, "-w", "-t", "60", "stop"],
        )
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), Error> {
        let output = run_as(&self.bin_dir, self.as_postgres, program, args)?;
        if output.status.success() {
            Ok(())
        } else {
            Err(err(format!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        destroy(&self.base, &self.bin_dir, self.as_postgres);
    }
}

fn destroy(base: &Path, bin_dir: &Path, as_postgres: bool) {
    let data = base.join("data");
    if data.join("postmaster.pid").exists() {
        if let Some(data) = data.to_str() {
            let _ = run_as(
                bin_dir,
                as_postgres,
                "pg_ctl",
                &["-D", data, "-m", "immediate", "-w", "stop"],
            );
        }
    }
    let _ = fs::remove_dir_all(base);
}

/// A new, empty directory of this process's for `what` (a cluster, a pooler, ...), named
/// `pg-provision-<pid>-...` so that a later process can tell when it was abandoned.
fn scratch_dir(what: &str) -> Result<PathBuf, Error> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pg-provision-{}-{what}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn postmaster_pid(data_dir: &Path) -> Result<u32, Error> {
    let pid_file = data_dir.join("postmaster.pid");
    let text = fs::read_to_string(&pid_file)
        .map_err(|e| err(format!("cannot read {}: {e}", pid_file.display())))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
        .ok_or_else(|| err(format!("no pid in {}", pid_file.display())))
}

/// Kills the server whose data directory is `data_dir` with SIGKILL, the postmaster and
/// then its backends, each where it stands, as a crash would.
fn kill_server(data_dir: &Path) -> Result<(), Error> {
    let pid = postmaster_pid(data_dir)?;
    let children = children_of(pid);
    signal(pid, "-KILL")?;
    for child in children {
        // One that already exited is fine.
        let _ = signal(child, "-KILL");
    }
    Ok(())
}

/// The processes whose parent is `pid`, from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: the name may hold spaces and parentheses.
            let after_name = &stat[stat.rfind(')')? + 1..];
            let parent: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
            (parent == pid).then_some(child)
        })
        .collect()
}

fn signal(pid: u32, signal: &str) -> Result<(), Error> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| err(format!("cannot run kill: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(err(format!("kill {signal} {pid} failed ({status})")))
    }
}

fn run_as(
    bin_dir: &Path,
    as_postgres: bool,
    program: &str,
    args: &[&str],
) -> Result<Output, Error> {
    let program_path = bin_dir.join(program);
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(&program_path);
        c
    } else {
        Command::new(&program_path)
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .current_dir(std::env::temp_dir());
    command
        .output()
        .map_err(|e| err(format!("cannot run {}: {e}", program_path.display())))
}

/// Stops and removes clusters left by processes that died without cleaning up.
fn remove_abandoned_clusters() {
    let Ok(bin_dir) = find_bin_dir() else {
        return;
    };
    for base in abandoned_clusters(&std::env::temp_dir()) {
        destroy(&base, &bin_dir, running_as_root());
    }
}

/// The cluster directories in `dir` whose owning process is gone.
///
/// The owner is read from the directory's own name (`pg-provision-<pid>-<n>`), never
/// from a file inside it: a directory another process has just created, and not yet
/// filled, must not look abandoned, or two processes starting clusters at once would
/// remove each other's.
fn abandoned_clusters(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("pg-provision-")) else {
                return false;
            };
            let owner = rest
                .split('-')
                .next()
                .and_then(|pid| pid.parse::<u32>().ok());
            // A name this crate did not write is left alone.
            owner.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|entry| entry.path())
        .collect()
}

fn find_bin_dir() -> Result<PathBuf, Error> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d)) {
            // A PATH of symbolic links to a few of the tools (initdb, pg_ctl) is common:
            // the others (pg_basebackup) are beside the real ones.
            let real = fs::canonicalize(dir.join("initdb"))
                .ok()
                .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
                .filter(|real| has_tools(real));
            return Ok(real.unwrap_or(dir));
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = e.path().join("bin");
            has_tools(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        err(
            "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, through \
             `pg_config --bindir`, or under /usr/lib/postgresql/*/bin. Install them \
             (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install \
             postgresql-server`; macOS: `brew install postgresql`), or set DATABASE_URL to \
             a server you have.",
        )
    })
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn postgres_user_ids() -> Result<(u32, u32), Error> {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            err(
                "running as root, and initdb refuses root: a `postgres` user is needed to \
                 run the throwaway cluster (the postgresql package creates it), or set \
                 DATABASE_URL",
            )
        })
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| err(format!("cannot find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("cannot find a free port: {e}")))
}

fn path_str(path: &Path) -> Result<&str, Error> {
    path.to_str()
        .ok_or_else(|| err(format!("path is not UTF-8: {}", path.display())))
}

fn sanitize_identifier(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if cleaned.is_empty() {
        "db".to_owned()
    } else {
        cleaned
    }
}

/// `url` with its database replaced by `database`; both URL and `key=value` forms.
pub fn with_database(url: &str, database: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            url.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let authority = before_query.split('/').next().unwrap_or(before_query);
        let mut out = format!("{scheme}{authority}/{database}");
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        out
    } else {
        format!("{url} dbname={database}")
    }
}

fn redact_url(url: &str) -> String {
    // postgres://user:secret@host → postgres://user:***@host
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Throwaway clusters of the shared server, removed when the process exits normally
/// (the test harness ends with `exit`, which runs `atexit` handlers but no destructors).
static EXIT_CLEANUP: Mutex<Vec<(PathBuf, PathBuf, bool)>> = Mutex::new(Vec::new());

fn register_exit_cleanup(base: PathBuf, bin_dir: PathBuf, as_postgres: bool) {
    extern "C" {
        fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
    }
    extern "C" fn cleanup() {
        if let Ok(mut clusters) = EXIT_CLEANUP.lock() {
            for (base, bin_dir, as_postgres) in clusters.drain(..) {
                destroy(&base, &bin_dir, as_postgres);
            }
        }
    }
    if let Ok(mut clusters) = EXIT_CLEANUP.lock() {
        let first = clusters.is_empty();
        clusters.push((base, bin_dir, as_postgres));
        if first {
            // SAFETY: `cleanup` is a plain function that lives for the whole program.
            unsafe {
                atexit(cleanup);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_both_url_forms() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/old?sslmode=disable", "new"),
            "postgres://u:p@h:5432/new?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "new"), "postgresql://h/new");
        assert_eq!(
            with_database("host=h user=u dbname=old", "new"),
            "host=h user=u dbname=old dbname=new"
        );
    }

    #[test]
    fn only_clusters_of_dead_processes_count_as_abandoned() {
        let dir = std::env::temp_dir().join(format!("pg-provision-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // No process has a pid at or above the kernel's limit.
        let dead_pid: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4_194_304);
        let live = dir.join(format!("pg-provision-{}-0", std::process::id()));
        let dead = dir.join(format!("pg-provision-{dead_pid}-0"));
        let foreign = dir.join("pg-provision-notes");
        for d in [&live, &dead, &foreign] {
            fs::create_dir_all(d).unwrap();
        }
        // Just created and still empty, as a concurrent start-up leaves it: kept.
        assert_eq!(abandoned_clusters(&dir), vec![dead]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
