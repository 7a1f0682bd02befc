//! Real TCP servers that answer with their own name, and the clients that ask.
//!
//! The client speaks first. An HTTP request (`GET ...`) gets an HTTP/1.1
//! response whose body is the name, with keep-alive, so curl, wrk and the
//! health checks see a web server. Any other first line gets the name as a
//! line; after `name` the server closes (a short client, [`fetch_name`]),
//! otherwise it echoes every further line until the client closes (a
//! long-lived one, [`Session`]).

use std::{
    io::{BufRead, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::netns::Netns;

/// A TCP server in a namespace: writes its name and closes, per connection.
pub struct NameServer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<Result<()>>>>,
}

impl NameServer {
    /// Binds `addr` inside `ns` (returns once listening) and serves `name`.
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop2, name) = (stop.clone(), name.to_string());
        let handle = ns.spawn(move || -> Result<()> {
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("bind {addr}: {e}")));
                    return Err(e.into());
                }
            };
            let _ = ready_tx.send(Ok(()));
            serve(listener, &name, &stop2)
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("server {addr} in {}: {e}", ns.name()),
            Err(_) => anyhow::bail!("server {addr} in {} did not start within 5 s", ns.name()),
        }
        Ok(Self { stop, thread: Some(handle) })
    }
}

fn serve(listener: TcpListener, name: &str, stop: &AtomicBool) -> Result<()> {
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    while !stop.load(Ordering::Relaxed) {
        // Wake up now and then to notice `stop`; accept as soon as a client comes.
        let n = unsafe { libc::poll(&mut pfd, 1, 50) };
        if n <= 0 {
            continue;
        }
        let (s, _) = listener.accept().context("accept")?;
        let name = name.to_string();
        thread::spawn(move || answer(s, &name));
    }
    Ok(())
}

/// Serves one connection (see the module docs).
pub fn answer(mut s: TcpStream, name: &str) {
    let _ = s.set_nodelay(true);
    let Ok(r) = s.try_clone() else { return };
    let mut r = std::io::BufReader::new(r);
    let mut first = String::new();
    if r.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    if first.starts_with("GET ") || first.starts_with("HEAD ") {
        return http(s, r, first, name);
    }
    if s.write_all(format!("{name}\n").as_bytes()).is_err() {
        return;
    }
    // One-shot clients ask "name": the server closes first, so TIME_WAIT
    // stays on the server and the client's ports are not used up.
    if first.trim_end() == "name" {
        return;
    }
    for line in r.lines().map_while(Result::ok) {
        if s.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn http(mut s: TcpStream, mut r: std::io::BufReader<TcpStream>, mut request: String, name: &str) {
    let body = format!("{name}\n");
    loop {
        // Headers until the blank line; `Connection: close` ends the loop.
        let mut close = request.contains("HTTP/1.0");
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if h.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if s.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
        request.clear();
        if r.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr` (from the calling thread's namespace) and returns the
/// name the server answered with; the server then closes.
pub fn fetch_name(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"name\n").with_context(|| format!("send to {addr}"))?;
    let mut name = String::new();
    std::io::Read::read_to_string(&mut s, &mut name).with_context(|| format!("read from {addr}"))?;
    let name = name.trim_end().to_string();
    anyhow::ensure!(!name.is_empty(), "{addr} closed without a name");
    Ok(name)
}

/// A long-lived connection: it stays on its backend, or breaks.
pub struct Session {
    /// The backend's name.
    pub name: String,
    reader: std::io::BufReader<TcpStream>,
    stream: TcpStream,
}

impl Session {
    /// Connects (from the calling thread's namespace) and reads the name.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"hello\n").with_context(|| format!("send to {addr}"))?;
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut name = String::new();
        reader.read_line(&mut name).with_context(|| format!("read from {addr}"))?;
        let name = name.trim_end().to_string();
        anyhow::ensure!(!name.is_empty(), "{addr} closed without a name");
        Ok(Self { name, reader, stream })
    }

    /// The client's port.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |a| a.port())
    }

    /// Sends a line and expects it back: the connection is still with its backend.
    pub fn ping(&mut self, text: &str) -> Result<()> {
        self.stream.write_all(format!("{text}\n").as_bytes()).context("send")?;
        let mut back = String::new();
        self.reader.read_line(&mut back).context("receive")?;
        anyhow::ensure!(back.trim_end() == text, "echo {back:?} instead of {text:?}");
        Ok(())
    }
}
