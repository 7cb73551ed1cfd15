//! The project's GeeTest simulator on a real socket, its test credentials, and
//! the proofs it mints.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub const CAPTCHA_ID: &str = "647f5ed2ed8acb4be36784e01556bb71";
pub const CAPTCHA_KEY: &str = "b09a7aafbfd83f73b35a9b530d0337bf";
pub const OTHER_ID: &str = "0123456789abcdef0123456789abcdef";
pub const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";

pub struct Sim {
    pub addr: SocketAddr,
    pub sim: Arc<gatekeeper::sim::Simulator>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    pub async fn start() -> Self {
        let sim = gatekeeper::sim::Simulator::new(vec![
            (CAPTCHA_ID.to_owned(), CAPTCHA_KEY.to_owned()),
            (OTHER_ID.to_owned(), OTHER_KEY.to_owned()),
        ]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(gatekeeper::sim::serve(listener, sim.clone()));
        Self { addr, sim, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A fresh valid proof for `captcha_id`, as the widget would yield it.
    pub fn mint(&self, captcha_id: &str) -> ProofFields {
        let p = self
            .sim
            .mint(captcha_id)
            .expect("simulator knows this captcha id");
        ProofFields {
            lot_number: p.lot_number,
            captcha_output: p.captcha_output,
            pass_token: p.pass_token,
            gen_time: p.gen_time,
            captcha_id: p.captcha_id,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProofFields {
    pub lot_number: String,
    pub captcha_output: String,
    pub pass_token: String,
    pub gen_time: String,
    pub captcha_id: String,
}

impl ProofFields {
    /// The four fields the validate API takes.
    pub fn proof(&self) -> gatekeeper::geetest::Proof {
        gatekeeper::geetest::Proof {
            lot_number: self.lot_number.clone(),
            captcha_output: self.captcha_output.clone(),
            pass_token: self.pass_token.clone(),
            gen_time: self.gen_time.clone(),
        }
    }

    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("lot_number", &self.lot_number),
            ("captcha_output", &self.captcha_output),
            ("pass_token", &self.pass_token),
            ("gen_time", &self.gen_time),
            ("captcha_id", &self.captcha_id),
        ]
    }

    /// The five fields form-encoded, to prepend or append to a form body.
    pub fn form(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs())
            .finish()
    }

    /// The secrets that must never appear in a log.
    pub fn secrets(&self) -> [&str; 2] {
        [&self.pass_token, &self.captcha_output]
    }
}

/// The test credential's key.
pub fn captcha_key() -> gatekeeper::config::CaptchaKey {
    gatekeeper::config::CaptchaKey::new(CAPTCHA_KEY.to_owned())
}
