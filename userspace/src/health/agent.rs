//! The agent check (HAProxy's `agent-check`): a small TCP service on the
//! backend says how much it can take. veerd connects every `interval`, reads
//! one line, and applies it: a weight percentage (`75%`, scaling the
//! configured weight; `0%` takes no new flows), `drain`, `down`, `up` (or
//! `ready`), several at once separated by spaces or commas (`up 50%`). An
//! operator's drain or disable wins over the agent's `up`.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
};

/// Longest answer read from an agent; an agent's line is a few words.
const MAX_ANSWER: u64 = 1024;

/// What an agent asks for its backend's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// No objection (clears an earlier `drain` or `down`).
    Up,
    /// No new flows; existing ones stay.
    Drain,
    /// Out: flows move.
    Down,
}

/// An agent's last answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentVerdict {
    /// Percent of the configured weight (0 to 100... or more), if it said one.
    pub weight_pct: Option<u32>,
    /// The state it asked for, if it said one.
    pub state: Option<AgentState>,
}

impl AgentVerdict {
    /// For status and logs: `50%`, `drain`, `up 50%`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.state {
            Some(AgentState::Up) => parts.push("up".to_string()),
            Some(AgentState::Drain) => parts.push("drain".into()),
            Some(AgentState::Down) => parts.push("down".into()),
            None => {}
        }
        if let Some(p) = self.weight_pct {
            parts.push(format!("{p}%"));
        }
        parts.join(" ")
    }

    /// `weight` scaled by the percentage (at least 1 unless it is 0%).
    pub fn scale(&self, weight: u32) -> u32 {
        match self.weight_pct {
            None => weight,
            Some(0) => 0,
            Some(p) => (weight as u64 * p as u64 / 100).clamp(1, u32::MAX as u64) as u32,
        }
    }
}

/// Parses an agent's line. Unknown words are an error (nothing is applied).
pub fn parse(line: &str) -> Result<AgentVerdict, String> {
    let mut v = AgentVerdict::default();
    let words: Vec<&str> = line.split([' ', ',', '\t']).map(str::trim).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return Err("an empty answer".into());
    }
    for w in words {
        let lw = w.to_ascii_lowercase();
        if let Some(n) = lw.strip_suffix('%') {
            let p: u32 = n.parse().map_err(|_| format!("{w:?} is not a percentage"))?;
            if p > 1000 {
                return Err(format!("{w:?}: at most 1000%"));
            }
            v.weight_pct = Some(p);
            continue;
        }
        v.state = Some(match lw.as_str() {
            "up" | "ready" => AgentState::Up,
            "drain" => AgentState::Drain,
            "down" | "fail" | "stopped" | "maint" => AgentState::Down,
            _ => return Err(format!("{w:?} is not a percentage, up, ready, drain or down")),
        });
    }
    Ok(v)
}

/// One agent answer, for the daemon.
#[derive(Debug)]
pub struct AgentReport {
    /// Backend id.
    pub backend: u32,
    /// Checker generation (reports of replaced agents are ignored).
    pub generation: u64,
    /// The verdict, or why there is none (unreachable, unparsable).
    pub verdict: Result<AgentVerdict, String>,
}

async fn ask(target: SocketAddr, timeout: Duration) -> Result<AgentVerdict, String> {
    let once = async {
        let s = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
        let mut line = String::new();
        let n = tokio::io::BufReader::new(s.take(MAX_ANSWER))
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n as u64 == MAX_ANSWER && !line.ends_with('\n') {
            return Err(format!("answer longer than {MAX_ANSWER} bytes"));
        }
        parse(&line)
    };
    tokio::time::timeout(timeout, once).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// Asks the agent at `target` every `interval`; reports each answer that
/// differs from the one before (an unreachable agent changes nothing: its
/// last verdict stays).
pub fn spawn_agent(
    backend: u32,
    generation: u64,
    target: SocketAddr,
    interval: Duration,
    timeout: Duration,
    tx: mpsc::UnboundedSender<AgentReport>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<Result<AgentVerdict, String>> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let v = ask(target, timeout).await;
            if last.as_ref() != Some(&v) {
                last = Some(v.clone());
                if tx.send(AgentReport { backend, generation, verdict: v }).is_err() {
                    return;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endless_answer_is_refused_without_reading_it_all() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let junk = vec![b'a'; 1 << 20];
            while tokio::io::AsyncWriteExt::write_all(&mut s, &junk).await.is_ok() {}
        });
        let e = ask(target, Duration::from_secs(10)).await.unwrap_err();
        assert!(e.contains("longer than 1024 bytes"), "{e}");
    }

    #[test]
    fn answers_parse_like_haproxys_agent() {
        assert_eq!(parse("75%\n").unwrap(), AgentVerdict { weight_pct: Some(75), state: None });
        assert_eq!(parse("up 50%").unwrap(), AgentVerdict { weight_pct: Some(50), state: Some(AgentState::Up) });
        assert_eq!(parse("DRAIN").unwrap().state, Some(AgentState::Drain));
        assert_eq!(parse("ready,100%").unwrap().state, Some(AgentState::Up));
        assert_eq!(parse("stopped").unwrap().state, Some(AgentState::Down));
        assert!(parse("").is_err() && parse("fast").is_err() && parse("x%").is_err() && parse("5000%").is_err());
        let v = parse("50%").unwrap();
        assert_eq!((v.scale(100), v.scale(1), parse("0%").unwrap().scale(100)), (50, 1, 0));
        assert_eq!(parse("up 50%").unwrap().describe(), "up 50%");
    }
}
