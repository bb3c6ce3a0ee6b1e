//! Sending mail, configured as Hydra's mail is: by the
//! `EMAIL_SENDER_TRANSPORT_*` environment variables (`EMAIL_SENDER_TRANSPORT
//! = SMTP`, `…_host` (localhost), `…_port` (25; 465 with `…_ssl = ssl`,
//! 587 with `…_ssl = starttls`), `…_sasl_username`, `…_sasl_password`,
//! `…_timeout` (120 s), `…_helo`), else the local `sendmail`. Setting
//! `…_host` alone chooses SMTP too. `HYDRA_MAIL_SINK=FILE` appends each
//! message (and a blank line) to FILE instead of sending it;
//! `HYDRA_MAIL_TEST` also prints each message to the log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Where mail goes.
enum Transport {
    Sink(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
}

/// The mailer.
pub struct Mailer {
    transport: Transport,
    /// Print each message (`HYDRA_MAIL_TEST`).
    test: bool,
    /// How it was configured, for the log.
    described: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("transport", &self.described)
            .finish()
    }
}

impl Mailer {
    /// The mailer the environment configures, or what is wrong with it.
    pub fn from_env() -> Result<Mailer, String> {
        Mailer::from_vars(&std::env::vars().collect())
    }

    /// The mailer `vars` (the environment) configure.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Mailer, String> {
        let var = |k: &str| {
            vars.get(&format!("EMAIL_SENDER_TRANSPORT_{k}"))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let test = vars.get("HYDRA_MAIL_TEST").is_some_and(|v| !v.is_empty());
        if let Some(sink) = vars.get("HYDRA_MAIL_SINK").filter(|v| !v.is_empty()) {
            return Ok(Mailer {
                transport: Transport::Sink(PathBuf::from(sink)),
                test,
                described: format!("appended to {sink} (HYDRA_MAIL_SINK)"),
            });
        }
        let kind = vars.get("EMAIL_SENDER_TRANSPORT").map(String::as_str);
        let smtp = match kind.map(str::to_ascii_lowercase).as_deref() {
            Some("smtp") => true,
            Some("sendmail") => false,
            None | Some("") => var("host").is_some(),
            Some(_) => {
                return Err(format!(
                    "EMAIL_SENDER_TRANSPORT={}: only SMTP and Sendmail are supported",
                    kind.unwrap_or_default()
                ));
            }
        };
        if !smtp {
            let command = var("sendmail").unwrap_or_else(|| "sendmail".into());
            return Ok(Mailer {
                transport: Transport::Sendmail(
                    AsyncSendmailTransport::<Tokio1Executor>::new_with_command(command.clone()),
                ),
                test,
                described: format!("the local {command}"),
            });
        }
        let host = var("host").unwrap_or_else(|| "localhost".into());
        let ssl = var("ssl").unwrap_or_default().to_ascii_lowercase();
        let tls = |host: &str| {
            TlsParameters::new(host.to_string())
                .map_err(|e| format!("EMAIL_SENDER_TRANSPORT_ssl: {e}"))
        };
        let (tls, default_port) = match ssl.as_str() {
            "" | "0" => (Tls::None, 25),
            "starttls" => (Tls::Required(tls(&host)?), 587),
            "ssl" | "1" => (Tls::Wrapper(tls(&host)?), 465),
            other => {
                return Err(format!(
                    "EMAIL_SENDER_TRANSPORT_ssl={other}: use starttls, ssl or 0"
                ));
            }
        };
        let port = match var("port") {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("EMAIL_SENDER_TRANSPORT_port={p} is not a port"))?,
            None => default_port,
        };
        let timeout = match var("timeout") {
            Some(t) => t.parse::<u64>().map_err(|_| {
                format!("EMAIL_SENDER_TRANSPORT_timeout={t} is not a number of seconds")
            })?,
            None => 120,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(timeout)));
        if let Some(helo) = var("helo") {
            builder = builder.hello_name(ClientId::Domain(helo));
        }
        match (var("sasl_username"), var("sasl_password")) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user, password));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "EMAIL_SENDER_TRANSPORT_sasl_username and …_sasl_password go together".into(),
                );
            }
            (None, None) => {}
        }
        if ssl.is_empty() || ssl == "0" {
            tracing::debug!("mail goes over SMTP without TLS");
        }
        Ok(Mailer {
            transport: Transport::Smtp(builder.build()),
            test,
            described: format!("SMTP to {host}:{port}"),
        })
    }

    /// Sends `message`.
    pub async fn send(&self, message: &Message) -> Result<(), String> {
        if self.test {
            tracing::info!(
                message = %String::from_utf8_lossy(&message.formatted()),
                "sending mail (HYDRA_MAIL_TEST)"
            );
        }
        match &self.transport {
            Transport::Sink(path) => {
                use tokio::io::AsyncWriteExt;
                let mut text = message.formatted();
                text.push(b'\n');
                let mut file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|e| format!("HYDRA_MAIL_SINK {}: {e}", path.display()))?;
                file.write_all(&text)
                    .await
                    .map_err(|e| format!("HYDRA_MAIL_SINK {}: {e}", path.display()))
            }
            Transport::Smtp(smtp) => smtp
                .send(message.clone())
                .await
                .map(|_| ())
                .map_err(|e| format!("mail via {}: {e}", self.described)),
            Transport::Sendmail(sendmail) => sendmail
                .send(message.clone())
                .await
                .map_err(|e| format!("mail via {}: {e}", self.described)),
        }
    }
}

/// The name of this machine (for default addresses).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The sender of notification mail: `notification_sender`, else
/// `$USER@host`, else `hydra@host`.
pub fn sender(config: &hydra_config::Config) -> String {
    config
        .notify
        .notification_sender
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let user = std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "hydra".into());
            format!("{user}@{}", host_name())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> HashMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_environment_chooses_the_transport() {
        let sink = Mailer::from_vars(&vars(&[("HYDRA_MAIL_SINK", "/tmp/x")])).unwrap();
        assert!(sink.described.contains("HYDRA_MAIL_SINK"));
        let smtp = Mailer::from_vars(&vars(&[
            ("EMAIL_SENDER_TRANSPORT", "SMTP"),
            ("EMAIL_SENDER_TRANSPORT_host", "mail.example.org"),
            ("EMAIL_SENDER_TRANSPORT_ssl", "starttls"),
        ]))
        .unwrap();
        assert_eq!(smtp.described, "SMTP to mail.example.org:587");
        let host_only =
            Mailer::from_vars(&vars(&[("EMAIL_SENDER_TRANSPORT_host", "127.0.0.1")])).unwrap();
        assert_eq!(host_only.described, "SMTP to 127.0.0.1:25");
        let local = Mailer::from_vars(&vars(&[])).unwrap();
        assert_eq!(local.described, "the local sendmail");
        let err = Mailer::from_vars(&vars(&[
            ("EMAIL_SENDER_TRANSPORT", "SMTP"),
            ("EMAIL_SENDER_TRANSPORT_port", "lots"),
        ]))
        .unwrap_err();
        assert!(err.contains("EMAIL_SENDER_TRANSPORT_port=lots"), "{err}");
        let err = Mailer::from_vars(&vars(&[("EMAIL_SENDER_TRANSPORT", "Pigeon")])).unwrap_err();
        assert!(err.contains("Pigeon"), "{err}");
    }
}
