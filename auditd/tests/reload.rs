//! SIGHUP reloads the tokens of a running auditd: the binary itself, started as the
//! quickstart starts it (`auditd demo`, on a throwaway PostgreSQL), with a token file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OLD: &str = "old-token-0123456789abcdef";
const NEW: &str = "new-token-0123456789abcdef";

/// The status code auditd answers `GET /api/v1/logs?limit=1` with, given `token`.
fn status_with(address: &str, token: &str) -> u16 {
    let mut stream = TcpStream::connect(address).expect("connect to auditd");
    write!(
        stream,
        "GET /api/v1/logs?limit=1 HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGINT, so the demo removes its throwaway cluster.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn sighup_puts_the_token_file_in_force_again() {
    let dir = std::env::temp_dir().join(format!("auditd-reload-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("tokens");
    std::fs::write(&token_file, format!("ops:{OLD}\n")).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_auditd"))
        .args(["demo", "--rounds", "1", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", "")
        .env("AUDITD_TOKEN_FILE", &token_file)
        .env_remove("AUDITD_TOKENS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start auditd demo");
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    let mut address = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("See them in a browser: http://") {
            address = Some(rest.trim_end_matches('/').to_owned());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let address = address.expect("the demo says where it serves");
    assert_eq!(status_with(&address, OLD), 200);
    assert_eq!(status_with(&address, NEW), 401);

    std::fs::write(&token_file, format!("ops:{NEW}\n")).unwrap();
    Command::new("kill")
        .args(["-HUP", &demo.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&address, NEW) != 200 {
        assert!(Instant::now() < deadline, "the new token never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status_with(&address, OLD), 401);

    // A token file that does not load leaves the tokens in force as they were.
    std::fs::write(&token_file, "ops:short\n").unwrap();
    Command::new("kill")
        .args(["-HUP", &demo.0.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status_with(&address, NEW), 200);
    drop(demo);
    let _ = std::fs::remove_dir_all(&dir);
}
