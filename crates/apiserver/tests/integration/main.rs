//! Integration tests of the embedded API server: kube-rs in process and
//! over TCP, kube-runtime (watcher, reflector, Controller, leader
//! election), and the real kubectl. One binary, to keep builds short.

mod controllers;
mod fuzz;
mod hostile;
mod kubectl;
mod support;
mod verbs;
mod watch;
