//! The real `incidentd` binary: start-up configuration from flags and environment, the generated
//! admin token, health, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_incidentd");

/// A running binary whose log lines are forwarded to a channel.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Drop for Process {
    /// A failed assertion must not leave the server running after the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .env_remove("INCIDENTD_ADMIN_TOKEN")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, log: Vec::new() }
    }

    /// Reads log lines until one contains `needle`; the process exiting first fails the test.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line =
                self.lines.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| {
                    panic!("no log line with {needle:?}; log so far: {:#?}", self.log)
                });
            self.log.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn listening_base(&mut self) -> String {
        let line = self.wait_for("listening on http://");
        let start = line.find("http://").unwrap();
        line[start..].trim().to_owned()
    }

    /// Sends SIGTERM and returns the exit status and the rest of the log.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        self.log.extend(self.lines.iter());
        (status, std::mem::take(&mut self.log))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_generates_a_private_admin_token_and_never_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut process = Process::spawn(
        Command::new(BIN).args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data),
    );
    let base = process.listening_base();

    let token_file = data.join("admin-token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert!(token.len() >= 64, "the admin token carries 256 bits");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner may read the admin token");

    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let created = client
        .post(format!("{base}/v1/integrations"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "cli"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let url = created["webhook_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/v1/hooks/postman/whk_")), "{url}");
    // Deliveries, accepted and refused, and reads, so that the access log has lines to check.
    let run = serde_json::json!({"monitor_uid": "m-1", "metrics": {"failedTests": 1, "errors": 0}});
    let accepted = client.post(url).json(&run).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let refused = client.post(url).body("{").send().await.unwrap();
    assert_eq!(refused.status(), 400);
    client.get(format!("{base}/v1/incidents")).bearer_auth(&token).send().await.unwrap();
    process.wait_for("path=/v1/incidents status=200");

    let (status, log) = process.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    let log = log.join("\n");
    assert!(log.contains(&token_file.display().to_string()), "the log says where the token is");
    assert!(!log.contains(&token), "the log never shows the admin token");
    assert!(!log.contains(created["token"].as_str().unwrap()), "nor a webhook token");
    assert!(
        log.contains("method=POST path=/v1/hooks/postman/[redacted] status=202"),
        "the access log shows deliveries with the token redacted:\n{log}"
    );
    assert!(log.contains("path=/v1/hooks/postman/[redacted] status=400"), "{log}");
    assert!(log.contains("incident transition"), "transitions are logged: {log}");

    // A second start reads the same token rather than making a new one.
    let mut again = Process::spawn(
        Command::new(BIN).args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(&data),
    );
    again.wait_for("admin token read from");
    again.listening_base();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    assert!(again.terminate().0.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_configure_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::spawn(
        Command::new(BIN)
            .env("INCIDENTD_DATA_DIR", dir.path())
            .env("INCIDENTD_LISTEN", "127.0.0.1:0")
            .env("INCIDENTD_PUBLIC_URL", "https://incidents.example.com/"),
    );
    let base = process.listening_base();
    process.wait_for("webhook URLs start with https://incidents.example.com/v1/hooks/postman/");
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/integrations"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"name": "env"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = created["webhook_url"].as_str().unwrap();
    assert!(url.starts_with("https://incidents.example.com/v1/hooks/postman/whk_"), "{url}");
    assert!(process.terminate().0.success());
}

#[test]
fn a_bad_public_url_fails_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--public-url", "incidents.example.com", "--data-dir"])
        .arg(dir.path())
        .env_remove("INCIDENTD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid public URL \"incidents.example.com\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::spawn(
        Command::new(BIN)
            .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path()),
    );
    let line = process.wait_for("listening on http://");
    let record: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    let message = record["fields"]["message"].as_str().unwrap();
    let base = message.strip_prefix("listening on ").unwrap().to_owned();
    assert_eq!(record["level"], "INFO");
    reqwest::get(format!("{base}/healthz")).await.unwrap();
    let access = process.wait_for("\"path\":\"/healthz\"");
    let access: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(
        (access["fields"]["status"].as_u64(), access["fields"]["method"].as_str()),
        (Some(200), Some("GET"))
    );
    assert!(process.terminate().0.success());
}

/// Flags win over environment variables, which win over the config file, which wins over the
/// defaults; a bad key fails at start and is named.
#[test]
fn config_file_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("incidentd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://from-file.example\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let started = |extra_env: Option<&str>, extra_flag: Option<&str>| {
        let mut command = Command::new(BIN);
        command.arg("serve").arg("--config").arg(&config).env_remove("INCIDENTD_PUBLIC_URL");
        if let Some(url) = extra_env {
            command.env("INCIDENTD_PUBLIC_URL", url);
        }
        if let Some(url) = extra_flag {
            command.args(["--public-url", url]);
        }
        let mut process = Process::spawn(&mut command);
        let line = process.wait_for("webhook URLs start with ");
        assert!(process.terminate().0.success());
        line
    };
    assert!(started(None, None).contains("https://from-file.example/v1/hooks"), "the file applies");
    assert!(started(Some("https://from-env.example"), None).contains("https://from-env.example/"));
    let line = started(Some("https://from-env.example"), Some("https://from-flag.example"));
    assert!(line.contains("https://from-flag.example/"), "{line}");
    assert!(dir.path().join("data/admin-token").exists(), "data_dir came from the file");

    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 9\n").unwrap();
    let output = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_port"), "the bad key is named: {stderr}");

    std::fs::write(&config, "rate_limit = \"fast\"\n").unwrap();
    let output = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rate_limit"), "{stderr}");
}

/// `incidentd integration create` makes a working webhook URL offline, and points at the running
/// service when there is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_create_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["integration", "create", "--name", "From the CLI", "--data-dir"])
        .arg(dir.path())
        .env_remove("INCIDENTD_PUBLIC_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let token = created["token"].as_str().unwrap();
    assert!(created["webhook_url"].as_str().unwrap().ends_with(token));

    let mut server = Process::spawn(
        Command::new(BIN).args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()),
    );
    let base = server.listening_base();
    let delivered = reqwest::Client::new()
        .post(format!("{base}/v1/hooks/postman/{token}"))
        .json(&serde_json::json!({"monitor_uid": "m", "metrics": {"failedTests": 1, "errors": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 202, "the token made offline works");

    let output = Command::new(BIN)
        .args(["integration", "create", "--name", "While running", "--data-dir"])
        .arg(dir.path())
        .args(["--public-url", &base])
        .output()
        .unwrap();
    assert!(output.status.success());
    let hint = String::from_utf8_lossy(&output.stdout);
    assert!(hint.contains(&format!("curl -s -X POST {base}/v1/integrations")), "{hint}");
    assert!(server.terminate().0.success());
}
