//! An S3-compatible server on 127.0.0.1 (moto's `moto_server`, which the
//! test command installs into a virtual environment and names in
//! `HYDRA_TEST_S3_SERVER`), with a bucket to use.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server; it stops when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
}

/// The credentials requests are signed with.
pub const ACCESS_KEY: &str = "AKIAHYDRATEST";
pub const SECRET_KEY: &str = "hydra-test-secret";

impl S3Server {
    pub fn start() -> S3Server {
        let program = std::env::var("HYDRA_TEST_S3_SERVER").unwrap_or_else(|_| {
            panic!(
                "HYDRA_TEST_S3_SERVER is not set: run the tests with scripts/test, which installs an S3-compatible server"
            )
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the S3 server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { child, port }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// curl, signing its requests with the test credentials.
    fn curl(&self) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"));
        cmd
    }

    /// Creates `bucket` (with curl, as a person would).
    pub fn create_bucket(&self, bucket: &str) {
        let status = self
            .curl()
            .args(["-X", "PUT"])
            .arg(format!("{}/{bucket}", self.url()))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "creating bucket {bucket}");
    }

    /// The object `key` of `bucket`, if it exists.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self
            .curl()
            .arg(format!("{}/{bucket}/{key}", self.url()))
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// The keys in `bucket`.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .curl()
            .arg(format!("{}/{bucket}", self.url()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(String::from)
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
