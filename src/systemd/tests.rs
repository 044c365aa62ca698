//! Tests of the D-Bus service manager: the wait logic and error mapping on
//! their own, and `Systemd` against a fake systemd over a socketpair.

use super::*;

fn done(job: &str, result: &str) -> FinishedJob {
    FinishedJob {
        job: job.into(),
        unit: "web.service".into(),
        result: result.into(),
    }
}

#[test]
fn waits_for_its_own_job_and_skips_others() {
    let (tx, rx) = mpsc::channel();
    tx.send(done("/org/freedesktop/systemd1/job/7", "failed"))
        .unwrap();
    tx.send(done("/org/freedesktop/systemd1/job/8", "done"))
        .unwrap();
    let r = wait_for_job(
        &rx,
        "/org/freedesktop/systemd1/job/8",
        Duration::from_secs(60),
        &Cancel::never(),
    );
    assert_eq!(r, Ok("done".to_string()));
}

#[test]
fn reports_the_job_result_not_just_its_end() {
    let (tx, rx) = mpsc::channel();
    tx.send(done("/j/1", "failed")).unwrap();
    let r = wait_for_job(&rx, "/j/1", Duration::from_secs(60), &Cancel::never());
    assert_eq!(r, Ok("failed".to_string()));
    assert!(job_failed("web.service", "reload", "failed").contains("reload of web.service failed"));
}

#[test]
fn times_out_when_the_job_never_ends() {
    let (tx, rx) = mpsc::channel();
    tx.send(done("/j/other", "done")).unwrap();
    let r = wait_for_job(&rx, "/j/1", Duration::from_millis(1), &Cancel::never());
    let err = r.unwrap_err();
    assert!(err.contains("/j/1 not finished"), "{err}");
    drop(tx);
}

#[test]
fn a_signal_interrupts_the_wait() {
    let (_tx, rx) = mpsc::channel();
    let cancel = Cancel::default();
    cancel.trigger();
    let r = wait_for_job(&rx, "/j/1", Duration::from_secs(3600), &cancel);
    assert_eq!(r, Err("interrupted by SIGTERM".to_string()));
}

#[test]
fn a_lost_connection_is_an_error() {
    let (tx, rx) = mpsc::channel::<FinishedJob>();
    drop(tx);
    let r = wait_for_job(&rx, "/j/1", Duration::from_secs(3600), &Cancel::never());
    assert!(r.unwrap_err().contains("lost the connection"));
}

#[test]
fn dbus_errors_become_one_clear_line() {
    let m = |name: &str, verb: &str| {
        describe_method_error(name, "Unit x.service not found.", "x.service", verb)
    };
    assert_eq!(
        m("org.freedesktop.systemd1.NoSuchUnit", "reload"),
        "unit x.service not found"
    );
    assert!(m("org.freedesktop.systemd1.JobTypeNotApplicable", "reload")
        .contains("x.service cannot reload (it has no ExecReload=)"));
    assert!(m("org.freedesktop.DBus.Error.AccessDenied", "restart")
        .starts_with("not allowed to restart x.service"));
    assert!(m("org.freedesktop.DBus.Error.ServiceUnknown", "reload")
        .starts_with("systemd is not on the bus"));
    assert!(
        m("org.example.Weird", "reload").starts_with("cannot reload x.service: org.example.Weird")
    );
    for line in [
        m("org.freedesktop.systemd1.UnitMasked", "reload"),
        job_failed("x.service", "reload", "canceled"),
        job_failed("x.service", "reload", "strange"),
    ] {
        assert!(!line.contains('\n') && line.contains("x.service"), "{line}");
    }
}

#[test]
fn no_bus_is_named_as_such() {
    let io = std::io::Error::from(std::io::ErrorKind::NotFound);
    let line = describe(&zbus::Error::InputOutput(io.into()), "x.service", "reload");
    assert!(line.starts_with("no system bus"), "{line}");
}

/// A fake systemd on the other end of a socketpair: it announces every
/// job's end *before* it answers the call that enqueued it, which is
/// the race that subscribing first exists for.
mod fake {
    use super::*;
    use std::sync::{Arc, Mutex};
    use zbus::object_server::SignalEmitter;
    use zbus::zvariant::ObjectPath;

    pub const UNIT: &str = "/org/freedesktop/systemd1/unit/web_2eservice";

    #[derive(Default)]
    pub struct State {
        pub subscribed: bool,
        pub jobs: u32,
        pub result: String,
        pub active: String,
        pub invocation: u8,
    }

    pub struct Manager(pub Arc<Mutex<State>>);

    #[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
    impl Manager {
        fn subscribe(&self) {
            self.0.lock().unwrap().subscribed = true;
        }
        fn load_unit(&self, _name: &str) -> OwnedObjectPath {
            ObjectPath::try_from(UNIT).unwrap().into()
        }
        async fn reload_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.job(name, false, &emitter).await
        }
        async fn restart_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.job(name, true, &emitter).await
        }
        #[zbus(signal)]
        async fn job_removed(
            emitter: &SignalEmitter<'_>,
            id: u32,
            job: ObjectPath<'_>,
            unit: &str,
            result: &str,
        ) -> zbus::Result<()>;
    }

    impl Manager {
        async fn job(
            &self,
            unit: &str,
            restart: bool,
            emitter: &SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            let (id, result) = {
                let mut s = self.0.lock().unwrap();
                if !s.subscribed {
                    return Err(zbus::fdo::Error::Failed("not subscribed".into()));
                }
                s.jobs += 1;
                if restart && s.result == "done" {
                    s.invocation += 1;
                }
                (s.jobs, s.result.clone())
            };
            let path = format!("/org/freedesktop/systemd1/job/{id}");
            let job = ObjectPath::try_from(path.as_str()).unwrap();
            // An unrelated job ends first; it must not be taken for ours.
            Self::job_removed(
                emitter,
                1000 + id,
                "/org/freedesktop/systemd1/job/999".try_into().unwrap(),
                "other.service",
                "failed",
            )
            .await?;
            Self::job_removed(emitter, id, job.clone(), unit, &result).await?;
            Ok(job.into())
        }
    }

    pub struct Unit(pub Arc<Mutex<State>>);

    #[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
    impl Unit {
        #[zbus(property)]
        fn active_state(&self) -> String {
            self.0.lock().unwrap().active.clone()
        }
        #[zbus(property)]
        fn sub_state(&self) -> String {
            "running".into()
        }
        #[zbus(property, name = "InvocationID")]
        fn invocation_id(&self) -> Vec<u8> {
            vec![self.0.lock().unwrap().invocation; 16]
        }
    }

    /// A [`Systemd`] talking to a fresh fake, and the fake's state.
    pub fn systemd(result: &str, active: &str) -> (Systemd, Arc<Mutex<State>>, Connection) {
        let state = Arc::new(Mutex::new(State {
            result: result.into(),
            active: active.into(),
            ..State::default()
        }));
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server_state = Arc::clone(&state);
        let server = std::thread::spawn(move || {
            zbus::blocking::connection::Builder::async_io_unix_stream(a)
                .server(zbus::Guid::generate())
                .unwrap()
                .p2p()
                .serve_at(
                    "/org/freedesktop/systemd1",
                    Manager(Arc::clone(&server_state)),
                )
                .unwrap()
                .serve_at(UNIT, Unit(server_state))
                .unwrap()
                .build()
                .unwrap()
        });
        let client = zbus::blocking::connection::Builder::async_io_unix_stream(b)
            .p2p()
            .build()
            .unwrap();
        let server = server.join().unwrap();
        (Systemd::on(client), state, server)
    }
}

#[test]
fn a_reload_that_ends_before_its_reply_is_not_missed() {
    let (mut sd, state, _server) = fake::systemd("done", "active");
    for _ in 0..3 {
        sd.apply(
            "web.service",
            Action::Reload,
            Duration::from_secs(30),
            &Cancel::never(),
        )
        .unwrap();
    }
    assert_eq!(state.lock().unwrap().jobs, 3);
}

#[test]
fn a_failed_job_fails_the_apply() {
    let (mut sd, _state, _server) = fake::systemd("failed", "active");
    let err = sd
        .apply(
            "web.service",
            Action::Reload,
            Duration::from_secs(30),
            &Cancel::never(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        "reload of web.service failed; see `journalctl -u web.service`"
    );
}

#[test]
fn done_but_not_active_is_a_failure() {
    let (mut sd, _state, _server) = fake::systemd("done", "failed");
    let err = sd
        .apply(
            "web.service",
            Action::Reload,
            Duration::from_secs(30),
            &Cancel::never(),
        )
        .unwrap_err();
    assert!(
        err.contains("web.service is failed (running) after reload"),
        "{err}"
    );
}

#[test]
fn a_restart_needs_a_new_invocation() {
    let (mut sd, state, _server) = fake::systemd("done", "active");
    sd.apply(
        "web.service",
        Action::Restart,
        Duration::from_secs(30),
        &Cancel::never(),
    )
    .unwrap();
    assert_eq!(state.lock().unwrap().invocation, 1);
}
