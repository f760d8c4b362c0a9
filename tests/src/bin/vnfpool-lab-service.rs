//! A lab element's service as a process of its own (so that a test can freeze it with
//! SIGSTOP, and a kept lab can stop and restart it): answers every UDP datagram on each
//! `--udp ADDR:PORT` with `--name`, and every line of every TCP connection on each
//! `--tcp ADDR:PORT` with `--name` and a newline (a TCP health check only connects), with the
//! lab's own servers. Prints `ready` once every socket is bound; exits when its standard input
//! closes, so it never outlives the test that started it.

use std::{io::Read as _, net::SocketAddr, sync::mpsc};

use vnfpool_tests::{lab, netns::Stop};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut name, mut udp, mut tcp) = (None, Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let addr = |v: &str| -> SocketAddr { v.parse().unwrap_or_else(|e| panic!("{v}: {e}")) };
        match (arg.as_str(), it.next()) {
            ("--name", Some(v)) => name = Some(v.clone()),
            ("--udp", Some(v)) => udp.push(addr(v)),
            ("--tcp", Some(v)) => tcp.push(addr(v)),
            _ => panic!("usage: vnfpool-lab-service --name NAME [--udp ADDR:PORT]… [--tcp ADDR:PORT]…"),
        }
    }
    let name = name.expect("--name");
    let stop = Stop::default();
    let (ready, bound) = mpsc::channel();
    let servers = udp
        .into_iter()
        .map(|a| (a, false))
        .chain(tcp.into_iter().map(|a| (a, true)));
    let mut count = 0;
    for (addr, is_tcp) in servers {
        let (name, ready, stop) = (name.clone(), ready.clone(), stop.clone());
        std::thread::spawn(move || {
            if is_tcp {
                lab::tcp_server(&name, addr, ready, &stop);
            } else {
                lab::udp_server(&name, addr, ready, &stop);
            }
        });
        count += 1;
    }
    drop(ready);
    for _ in 0..count {
        match bound.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(mpsc::RecvError) => panic!("a server of {name} ended before it was bound"),
        }
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
