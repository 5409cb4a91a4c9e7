//! A `redis-server` of the test's own (Debian's package; `.ci/run` installs it) on a free
//! loopback port, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` of our own on `port` (no persistence).
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start(port: u16) -> Redis {
        Self::start_with(port, &["--save", "", "--appendonly", "no"])
    }

    /// With AOF in `dir`, every write fsynced (`appendfsync always`): a restart keeps all.
    pub fn start_aof(port: u16, dir: &std::path::Path) -> Redis {
        let dir = dir.display().to_string();
        Self::start_with(
            port,
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                &dir,
            ],
        )
    }

    fn start_with(port: u16, args: &[&str]) -> Redis {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Redis { child, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on {port}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
