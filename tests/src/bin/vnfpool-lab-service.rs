//! A lab element's service as a process of its own (so that a test can freeze it with
//! SIGSTOP): answers every UDP datagram on each `--udp ADDR:PORT` with `--name`, and accepts
//! TCP connections on each `--tcp ADDR:PORT` (a health-check target). Prints
//! `ready` once every socket is bound; exits when its standard input closes, so it never
//! outlives the test that started it.

use std::{
    io::Read as _,
    net::{TcpListener, UdpSocket},
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut name = None;
    let mut sockets = Vec::new();
    let mut listeners = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.next()) {
            ("--name", Some(v)) => name = Some(v.clone()),
            ("--udp", Some(v)) => {
                sockets.push(UdpSocket::bind(v.as_str()).unwrap_or_else(|e| panic!("binding {v}: {e}")))
            }
            ("--tcp", Some(v)) => {
                listeners.push(TcpListener::bind(v.as_str()).unwrap_or_else(|e| panic!("binding {v}: {e}")))
            }
            _ => panic!("usage: vnfpool-lab-service --name NAME [--udp ADDR:PORT]… [--tcp ADDR:PORT]…"),
        }
    }
    let name = name.expect("--name");
    for sock in sockets {
        let name = name.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        });
    }
    for listener in listeners {
        // Accept and close: a completed handshake is all a TCP check asks for.
        std::thread::spawn(move || while listener.accept().is_ok() {});
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
