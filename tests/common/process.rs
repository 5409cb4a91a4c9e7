//! The real `wsedge` binary as a child process, its stderr collected line by line.

use super::WAIT;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_wsedge");

/// CERTDIR replaced by the test's directory; the admin endpoint on a free port unless set
/// (tests run in parallel: never the default admin port).
fn prepare_config(config: &str, dir: &std::path::Path) -> String {
    let mut config = config.replace("CERTDIR", &dir.join("certs").display().to_string());
    if !config.contains("admin =") {
        config = config.replacen("[server]\n", "[server]\nadmin = \"127.0.0.1:0\"\n", 1);
    }
    config
}

impl Child {
    /// Replace the config file the process was started with (send `HUP` to apply it).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(
            self.dir.path().join("wsedge.toml"),
            prepare_config(config, self.dir.path()),
        )
        .unwrap();
    }

    /// The admin listener's address, from the "listening" log line.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        let l = self.wait_line(&["listening", "admin"]);
        field(&l, "admin")
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .parse()
            .unwrap()
    }

    /// Log lines seen so far containing every one of `parts`.
    pub fn count_lines(&self, parts: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Send a signal (`TERM`, `KILL`, `HUP`) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary running in the background; its stderr lines are collected.
pub struct Child {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

impl Child {
    /// Wait (bounded) until a log line contains every one of `parts`.
    pub fn wait_line(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!(
            "no log line with {parts:?} in:\n{}",
            self.lines.lock().unwrap().join("\n")
        );
    }
}

/// Start the real binary; CERTDIR in `config` is replaced by a fresh directory.
pub fn spawn_wsedge(config: &str) -> Child {
    spawn_wsedge_with(config, |_| {})
}

/// Like `spawn_wsedge`, with `prepare(certdir)` run before the process starts.
pub fn spawn_wsedge_with(config: &str, prepare: impl FnOnce(&std::path::Path)) -> Child {
    spawn_wsedge_env(config, prepare, &[])
}

/// Like `spawn_wsedge_with`, with extra environment variables.
pub fn spawn_wsedge_env(
    config: &str,
    prepare: impl FnOnce(&std::path::Path),
    env: &[(&str, &str)],
) -> Child {
    let dir = tempfile::tempdir().unwrap();
    prepare(&dir.path().join("certs"));
    let path = dir.path().join("wsedge.toml");
    std::fs::write(&path, prepare_config(config, dir.path())).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("HTTP_PORT")
        .env_remove("HTTPS_PORT")
        .env_remove("CERTDIR")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut c = Child {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
        lines,
        dir,
    };
    let l = c.wait_line(&["listening", "http"]);
    c.addr = field(&l, "http").parse().unwrap();
    c
}

/// A field's value in a text (`name=value`) or JSON (`"name":"value"`) log line.
fn field(line: &str, name: &str) -> String {
    for sep in [format!("{name}="), format!("\"{name}\":\"")] {
        if let Some(rest) = line.split(sep.as_str()).nth(1) {
            return rest
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap_or_default()
                .to_string();
        }
    }
    panic!("no {name} in {line}")
}
