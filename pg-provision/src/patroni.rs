//! A Patroni cluster on loopback (one etcd member, Patroni nodes each running a
//! PostgreSQL), for the tests of failover as production runs it: Patroni decides which
//! node leads, and clients find it by a multi-host URL.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{
    err, find_bin_dir, free_port, kill_server, path_str, postgres_user_ids, running_as_root,
    scratch_dir, Error,
};

/// One Patroni node: its process, its PostgreSQL's port and data, its REST API's port.
#[derive(Debug)]
struct Node {
    patroni: Option<Child>,
    pg_port: u16,
    api_port: u16,
    data_dir: PathBuf,
}

/// An etcd member and `nodes` Patroni nodes (`patroni` and `etcd` from Debian's `patroni`
/// and `etcd-server` packages), everything killed and removed when dropped.
///
/// Patroni runs with `synchronous_mode` when asked: a commit waits for the synchronous
/// standby, and only that standby may be promoted. The leader key lives 20 s (Patroni's
/// least `ttl`), so a leader that dies whole is replaced about 20 s later.
#[derive(Debug)]
pub struct Patroni {
    dir: PathBuf,
    etcd: Option<Child>,
    nodes: Vec<Node>,
}

impl Patroni {
    /// Starts etcd and `nodes` Patroni nodes; returns once one leads and, with
    /// `synchronous`, another is its synchronous standby (at most 120 s).
    pub fn start(nodes: usize, synchronous: bool) -> Result<Patroni, Error> {
        let patroni = program("patroni")?;
        let etcd = program("etcd")?;
        let bin_dir = find_bin_dir()?;
        let dir = scratch_dir("patroni-")?;
        let owner = running_as_root().then(postgres_user_ids).transpose()?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_child = Command::new(etcd)
            .args(["--name", "e1", "--data-dir", path_str(&dir.join("etcd"))?])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client_port}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &format!("e1=http://127.0.0.1:{peer_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("cannot run etcd: {e}")))?;
        let mut cluster = Patroni {
            dir,
            etcd: Some(etcd_child),
            nodes: Vec::new(),
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid)).map_err(|e| {
                err(format!(
                    "cannot give {} to postgres: {e}",
                    cluster.dir.display()
                ))
            })?;
        }
        for n in 0..nodes {
            let node = Node {
                patroni: None,
                pg_port: free_port()?,
                api_port: free_port()?,
                data_dir: cluster.dir.join(format!("node{n}")),
            };
            let config = cluster.dir.join(format!("node{n}.yml"));
            fs::write(
                &config,
                node_config(n, &node, client_port, synchronous, &bin_dir, &cluster.dir)?,
            )
            .map_err(|e| err(format!("cannot write {}: {e}", config.display())))?;
            let mut command = Command::new(&patroni);
            command
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Patroni runs PostgreSQL, which refuses root.
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&config, Some(uid), Some(gid)).map_err(|e| {
                    err(format!("cannot give {} to postgres: {e}", config.display()))
                })?;
                command.uid(uid).gid(gid);
            }
            let child = command
                .spawn()
                .map_err(|e| err(format!("cannot run patroni: {e}")))?;
            cluster.nodes.push(Node {
                patroni: Some(child),
                ..node
            });
            // The first node bootstraps the cluster; the others join it as replicas.
            if n == 0 {
                cluster.wait_for_leader(None, Duration::from_secs(60))?;
            }
        }
        if synchronous && nodes > 1 {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !(0..nodes).any(|n| cluster.answers(n, "/sync")) {
                if Instant::now() > deadline {
                    return Err(err(
                        "no Patroni node became a synchronous standby within 120 s",
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(cluster)
    }

    /// The node that leads now, if one does.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&n| self.answers(n, "/primary"))
    }

    /// Waits until a node other than `not` leads, and returns it.
    pub fn wait_for_leader(&self, not: Option<usize>, timeout: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().filter(|&l| Some(l) != not) {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(err(format!("no Patroni leader within {timeout:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every node, leader or not, with `target_session_attrs=read-write`: what a client
    /// configured for failover names.
    pub fn url(&self, database: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.pg_port))
            .collect();
        format!(
            "postgres://postgres@{}/{database}?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// Node `n`'s PostgreSQL alone.
    pub fn node_url(&self, n: usize, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            self.nodes[n].pg_port
        )
    }

    /// Kills node `n` whole with SIGKILL, Patroni first and then its PostgreSQL, as a
    /// machine that loses power would: its leader key expires, and another node takes
    /// over.
    pub fn kill_node(&mut self, n: usize) -> Result<(), Error> {
        let node = &mut self.nodes[n];
        if let Some(mut patroni) = node.patroni.take() {
            let _ = patroni.kill();
            let _ = patroni.wait();
        }
        kill_server(&node.data_dir)
    }

    fn answers(&self, n: usize, path: &str) -> bool {
        http_status(self.nodes[n].api_port, path) == Some(200)
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut patroni) = node.patroni.take() {
                let _ = patroni.kill();
                let _ = patroni.wait();
            }
            // None may run there (yet, or any more).
            let _ = kill_server(&node.data_dir);
        }
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn node_config(
    n: usize,
    node: &Node,
    etcd_port: u16,
    synchronous: bool,
    bin_dir: &Path,
    dir: &Path,
) -> Result<String, Error> {
    Ok(format!(
        "scope: pg-provision-{pid}\n\
         name: node{n}\n\
         restapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
         etcd3:\n  hosts: 127.0.0.1:{etcd_port}\n\
         bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 1\n    retry_timeout: 5\n\
         \x20   synchronous_mode: {synchronous}\n\
         \x20   postgresql:\n      use_pg_rewind: false\n\
         \x20     parameters:\n        max_connections: 200\n\
         \x20 initdb:\n  - encoding: UTF8\n  - locale: C\n\
         \x20 pg_hba:\n  - host replication all 127.0.0.1/32 trust\n\
         \x20 - host all all 127.0.0.1/32 trust\n  - local all all trust\n\
         postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n\
         \x20 data_dir: {data}\n  bin_dir: {bin}\n  pgpass: {dir}/pgpass{n}\n\
         \x20 authentication:\n    superuser:\n      username: postgres\n\
         \x20   replication:\n      username: postgres\n\
         \x20 parameters:\n    unix_socket_directories: {dir}\n",
        pid = std::process::id(),
        api = node.api_port,
        pg = node.pg_port,
        data = path_str(&node.data_dir)?,
        bin = path_str(bin_dir)?,
        dir = path_str(dir)?,
    ))
}

fn program(name: &str) -> Result<PathBuf, Error> {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err(format!(
                "{name} not found: install it (Debian: apt-get install patroni etcd-server)"
            ))
        })
}

/// The status of `GET path` on Patroni's REST API, or `None` while it does not answer.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
