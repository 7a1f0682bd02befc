//! Balancing by load with real servers and real connections: least-flows
//! steers new connections away from a backend that holds more of them.
//! Needs root.

use std::time::Duration;

use veer_tests::{
    daemon::{veerctl, wait_until, ClientLoad, EVENT_WAIT},
    deployment::Deployment,
    server::Session,
};

#[test]
fn least_flows_sends_new_connections_to_the_backend_holding_fewer() {
    let s = Deployment::new("lf", 2);
    let text = s
        .config(65537, &[1, 1], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nscheduler = \"least-flows\"");
    s.write(&text);
    let d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2"]).unwrap();
    // 40 long-lived connections on b1 (b2 drained meanwhile).
    assert!(veerctl(&s.cfg, &["drain", "web", "b2"]).0);
    let held: Vec<Session> =
        s.tb.client
            .ns
            .run(|| (0..40).map(|_| Session::open(s.vip(), Duration::from_secs(2))).collect::<Result<Vec<_>, _>>())
            .unwrap()
            .unwrap();
    assert!(held.iter().all(|x| x.name == "b1"));
    let pins = s.pins();
    let b1 = veer::dataplane::MapReader::backend_table(&pins)
        .unwrap()
        .into_iter()
        .find(|(_, b)| b.addr == veer::dataplane::to_abi(s.tb.backends[0].addr()))
        .unwrap()
        .0;
    assert_eq!(veer::dataplane::MapReader::active_flows(&pins, b1).unwrap(), 40, "the dataplane counts them");
    assert!(veerctl(&s.cfg, &["enable", "web", "b2"]).0);

    // Short connections: b2 holds fewer, so it gets a flow whenever it is
    // one of the two choices: about 3 in 4 (Maglev alone: 1 in 2).
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(300, EVENT_WAIT).unwrap();
    let samples = load.stop();
    let ok: Vec<&str> = samples.iter().filter_map(|x| x.result.as_deref().ok()).collect();
    assert_eq!(ok.len(), samples.len(), "connections failed");
    let to_b2 = ok.iter().filter(|n| **n == "b2").count() as f64 / ok.len() as f64;
    println!("b2 took {:.1}% of {} new connections", to_b2 * 100.0, ok.len());
    assert!(to_b2 > 0.62, "b2 took {:.0}% of {} new connections (expected about 75%)", to_b2 * 100.0, ok.len());
    drop(held);
}

/// A backend's agent: answers every connection on port 9999 with the
/// current `answer`, until dropped.
struct Agent {
    answer: std::sync::Arc<std::sync::Mutex<String>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Answers given so far.
    answers: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Agent {
    fn start(ns: &veer_tests::netns::Netns, answer: &str) -> Self {
        use std::{io::Write, sync::atomic::Ordering};
        let answer = std::sync::Arc::new(std::sync::Mutex::new(answer.to_string()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (a, s, n, (tx, rx)) = (answer.clone(), stop.clone(), answers.clone(), std::sync::mpsc::channel());
        ns.spawn(move || {
            let l = std::net::TcpListener::bind("0.0.0.0:9999").expect("agent port");
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let line = format!("{}\n", a.lock().unwrap());
                        let _ = c.write_all(line.as_bytes());
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
        .unwrap();
        rx.recv_timeout(EVENT_WAIT).expect("the agent listens");
        Self { answer, stop, answers }
    }

    fn say(&self, answer: &str) {
        *self.answer.lock().unwrap() = answer.to_string();
    }

    /// Waits until veerd has asked it `n` more times.
    fn wait_answers(&self, n: u64) {
        let target = self.answers.load(std::sync::atomic::Ordering::SeqCst) + n;
        wait_until(EVENT_WAIT, &format!("{n} more agent answers"), || {
            self.answers.load(std::sync::atomic::Ordering::SeqCst) >= target
        })
        .unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// b1's row in `veerctl backends --json`.
fn b1(s: &Deployment) -> serde_json::Value {
    let rows = veer_tests::daemon::veerctl_json(&s.cfg, &["backends"]);
    rows.as_array().unwrap().iter().find(|r| r["backend"] == "b1").unwrap().clone()
}

#[test]
fn the_agent_check_sets_a_backends_weight_and_state_and_the_operator_wins() {
    let s = Deployment::new("ag", 2);
    let text = s.config_with(
        65537,
        &[100, 100],
        "",
        "[service.agent]\nport = 9999\ninterval = \"50ms\"\ntimeout = \"200ms\"\n",
        |_| String::new(),
    );
    s.write(&text);
    let a1 = Agent::start(&s.tb.backends[0].ns, "up");
    let _a2 = Agent::start(&s.tb.backends[1].ns, "up 100%");
    let d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2"]).unwrap();
    let until = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        wait_until(EVENT_WAIT, what, || f(&b1(&s))).unwrap_or_else(|e| panic!("{e}: {}", b1(&s)));
    };
    until("a full share", &|r| (r["ring_share"].as_f64().unwrap() - 50.0).abs() < 0.1);

    a1.say("50%");
    until("half b1's weight: 50 of 150", &|r| {
        (r["ring_share"].as_f64().unwrap() - 100.0 / 3.0).abs() < 0.1 && r["agent"] == "50%"
    });
    let held = s.tb.client.ns.run(|| Session::open(s.vip(), Duration::from_secs(2))).unwrap();
    a1.say("drain");
    until("draining", &|r| r["state"] == "draining");
    let mut held = held.unwrap();
    held.ping("still there").expect("a drained backend keeps its connections");
    let ev = veer_tests::daemon::veerctl_json(&s.cfg, &["events", "--backend", "b1"]);
    assert_eq!(ev["events"].as_array().unwrap().last().unwrap()["reason"], "agent: drain", "{ev}");
    a1.say("down");
    until("down", &|r| r["state"] == "down");
    a1.say("up 100%");
    until("up, full share", &|r| r["state"] == "up" && (r["ring_share"].as_f64().unwrap() - 50.0).abs() < 0.1);

    // The operator wins over the agent's "up".
    assert!(veerctl(&s.cfg, &["drain", "web", "b1"]).0);
    // Counted, not timed: a busy machine may give veerd no time to ask.
    a1.wait_answers(6);
    assert_eq!(b1(&s)["state"], "draining", "six agent answers later, the operator's drain holds");
    assert!(veerctl(&s.cfg, &["enable", "web", "b1"]).0);
    until("up again", &|r| r["state"] == "up");

    // An agent that stops answering changes nothing.
    a1.say("25%");
    until("a quarter", &|r| r["agent"] == "25%");
    drop(a1);
    until("no answer", &|r| r["agent"].as_str().is_some_and(|a| a.contains("last answer")));
    assert_eq!(b1(&s)["state"], "up");
}
