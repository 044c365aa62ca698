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

/// `action` on web.service within 30 s, as the transaction asks for it.
fn act(sd: &mut Systemd, action: Action) -> anyhow::Result<()> {
    sd.apply(
        "web.service",
        action,
        Duration::from_secs(30),
        &Cancel::never(),
    )
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
        Instant::now(),
        Duration::from_secs(60),
        &Cancel::never(),
    );
    assert_eq!(r, Ok("done".to_string()));
}

#[test]
fn reports_the_job_result_not_just_its_end() {
    let (tx, rx) = mpsc::channel();
    tx.send(done("/j/1", "failed")).unwrap();
    let r = wait_for_job(
        &rx,
        "/j/1",
        Instant::now(),
        Duration::from_secs(60),
        &Cancel::never(),
    );
    assert_eq!(r, Ok("failed".to_string()));
    assert!(job_failed("web.service", "reload", "failed").contains("reload of web.service failed"));
}

#[test]
fn times_out_when_the_job_never_ends() {
    let (tx, rx) = mpsc::channel();
    tx.send(done("/j/other", "done")).unwrap();
    let r = wait_for_job(
        &rx,
        "/j/1",
        Instant::now(),
        Duration::from_millis(1),
        &Cancel::never(),
    );
    let err = r.unwrap_err();
    assert!(err.line.contains("/j/1 not finished"), "{err:?}");
    assert_eq!(err.kind, FaultKind::Answer, "a timeout is not retried");
    drop(tx);
}

#[test]
fn a_signal_interrupts_the_wait() {
    let (_tx, rx) = mpsc::channel();
    let cancel = Cancel::default();
    cancel.trigger();
    let r = wait_for_job(
        &rx,
        "/j/1",
        Instant::now(),
        Duration::from_secs(3600),
        &cancel,
    );
    assert_eq!(
        r.map_err(|f| f.line),
        Err("interrupted by SIGTERM".to_string())
    );
}

#[test]
fn a_lost_connection_is_a_connection_fault() {
    // The signal thread ends with the connection, and its sender with it.
    let (tx, rx) = mpsc::channel::<FinishedJob>();
    drop(tx);
    let started = Instant::now();
    let r = wait_for_job(
        &rx,
        "/j/1",
        started,
        Duration::from_secs(3600),
        &Cancel::never(),
    );
    let fault = r.unwrap_err();
    assert!(fault.line.contains("lost the connection"), "{fault:?}");
    assert_eq!(fault.kind, FaultKind::Connection);
    assert!(started.elapsed() < Duration::from_secs(5), "waited anyway");
}

#[test]
fn faults_are_sorted_by_what_a_new_connection_could_change() {
    use std::io::{Error as Io, ErrorKind};
    let io = |kind: ErrorKind| zbus::Error::InputOutput(Io::from(kind).into());
    let fdo = |e: zbus::fdo::Error| zbus::Error::FDO(Box::new(e));
    for (e, kind) in [
        // What a connection says once the bus daemon is gone.
        (io(ErrorKind::BrokenPipe), FaultKind::Connection),
        (io(ErrorKind::UnexpectedEof), FaultKind::Connection),
        (io(ErrorKind::ConnectionReset), FaultKind::Connection),
        // Reconnecting while it restarts.
        (io(ErrorKind::ConnectionRefused), FaultKind::Connection),
        (io(ErrorKind::NotFound), FaultKind::Connection),
        (zbus::Error::Handshake("EOF".into()), FaultKind::Connection),
        (
            fdo(zbus::fdo::Error::ServiceUnknown("gone".into())),
            FaultKind::SystemdAbsent,
        ),
        (
            fdo(zbus::fdo::Error::NameHasNoOwner("gone".into())),
            FaultKind::SystemdAbsent,
        ),
        // Answers: asking again gets the same.
        (io(ErrorKind::PermissionDenied), FaultKind::Answer),
        (
            fdo(zbus::fdo::Error::AccessDenied("no".into())),
            FaultKind::Answer,
        ),
        (
            fdo(zbus::fdo::Error::NoReply("slow".into())),
            FaultKind::Answer,
        ),
        (zbus::Error::InvalidReply, FaultKind::Answer),
    ] {
        assert_eq!(fault_kind(&e), kind, "{e:?}");
    }
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
        /// Enqueue jobs but never announce their end, as when the
        /// connection dies before the `JobRemoved` is sent.
        pub hang: bool,
        /// States `ActiveState` reports, one per read, once a job was
        /// enqueued, before `active`: another job still running on the unit.
        pub transient: std::collections::VecDeque<String>,
        /// `StartUnit` calls (a start makes the unit active).
        pub starts: u32,
        /// The state the unit is in once a job was enqueued (a reload that
        /// is "done" but leaves the unit failed).
        pub after_job: Option<String>,
    }

    /// systemd's own errors, as it names them on the bus.
    #[derive(Debug, zbus::DBusError)]
    #[zbus(prefix = "org.freedesktop.systemd1")]
    pub enum SystemdError {
        #[zbus(error)]
        ZBus(zbus::Error),
        NoSuchUnit(String),
    }

    pub struct Manager(pub Arc<Mutex<State>>);

    #[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
    impl Manager {
        fn subscribe(&self) {
            self.0.lock().unwrap().subscribed = true;
        }
        fn load_unit(&self, name: &str) -> Result<OwnedObjectPath, SystemdError> {
            if name != "web.service" {
                return Err(SystemdError::NoSuchUnit(format!("Unit {name} not found.")));
            }
            Ok(ObjectPath::try_from(UNIT).unwrap().into())
        }
        async fn start_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            {
                let mut s = self.0.lock().unwrap();
                s.starts += 1;
                if s.result == "done" {
                    s.active = "active".into();
                }
            }
            self.job(name, false, &emitter).await
        }
        async fn reload_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            {
                // systemd's answer to reloading a unit that is not running.
                let mut s = self.0.lock().unwrap();
                if s.active != "active" {
                    s.result = "invalid".into();
                }
            }
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
            let (id, result, hang) = {
                let mut s = self.0.lock().unwrap();
                if !s.subscribed {
                    return Err(zbus::fdo::Error::Failed("not subscribed".into()));
                }
                s.jobs += 1;
                if restart && s.result == "done" {
                    s.invocation += 1;
                }
                (s.jobs, s.result.clone(), s.hang)
            };
            let path = format!("/org/freedesktop/systemd1/job/{id}");
            let job = ObjectPath::try_from(path.as_str()).unwrap();
            if hang {
                return Ok(job.into());
            }
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
            let mut s = self.0.lock().unwrap();
            if s.jobs > 0 {
                if let Some(next) = s.transient.pop_front() {
                    return next;
                }
                if let Some(after) = &s.after_job {
                    return after.clone();
                }
            }
            s.active.clone()
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
        let state = state(result, active);
        let (client, server) = serve(&state);
        (Systemd::on(client), state, server)
    }

    pub fn state(result: &str, active: &str) -> Arc<Mutex<State>> {
        Arc::new(Mutex::new(State {
            result: result.into(),
            active: active.into(),
            ..State::default()
        }))
    }

    /// A fake serving `state`: the client end, and the server end that
    /// keeps it alive (closing it is the bus going away).
    pub fn serve(state: &Arc<Mutex<State>>) -> (Connection, Connection) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server_state = Arc::clone(state);
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
        (client, server.join().unwrap())
    }
}

#[test]
fn a_reload_that_ends_before_its_reply_is_not_missed() {
    let (mut sd, state, _server) = fake::systemd("done", "active");
    for _ in 0..3 {
        act(&mut sd, Action::Reload).unwrap();
    }
    assert_eq!(state.lock().unwrap().jobs, 3);
}

#[test]
fn a_failed_job_fails_the_apply() {
    let (mut sd, _state, _server) = fake::systemd("failed", "active");
    let err = act(&mut sd, Action::Reload).unwrap_err().to_string();
    assert_eq!(
        err,
        "reload of web.service failed; see `journalctl -u web.service`"
    );
}

/// Another app's reload still running on a shared unit when ours ends is
/// waited out; where the unit settles decides.
#[test]
fn a_unit_still_reloading_after_our_job_is_waited_for() {
    let reload = |sd: &mut Systemd, timeout: Duration| {
        sd.apply("web.service", Action::Reload, timeout, &Cancel::never())
    };
    let (mut sd, state, _server) = fake::systemd("done", "active");
    state.lock().unwrap().transient = ["reloading", "reloading", "activating"]
        .map(String::from)
        .into();
    reload(&mut sd, Duration::from_secs(30)).unwrap();
    assert!(state.lock().unwrap().transient.is_empty());

    let (mut sd, state, _server) = fake::systemd("done", "active");
    state.lock().unwrap().transient = ["reloading"].map(String::from).into();
    state.lock().unwrap().after_job = Some("failed".into());
    let err = reload(&mut sd, Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(err.contains("web.service is failed"), "{err}");

    let (mut sd, state, _server) = fake::systemd("done", "active");
    state.lock().unwrap().transient =
        std::iter::repeat_n("reloading".to_string(), 10_000).collect();
    let err = reload(&mut sd, Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(err.contains("web.service is reloading"), "{err}");
}

#[test]
fn done_but_not_active_is_a_failure() {
    let (mut sd, state, _server) = fake::systemd("done", "active");
    state.lock().unwrap().after_job = Some("failed".into());
    let err = act(&mut sd, Action::Reload).unwrap_err().to_string();
    assert!(
        err.contains("web.service is failed (running) after reload"),
        "{err}"
    );
}

#[test]
fn a_restart_needs_a_new_invocation() {
    let (mut sd, state, _server) = fake::systemd("done", "active");
    act(&mut sd, Action::Restart).unwrap();
    assert_eq!(state.lock().unwrap().invocation, 1);
}

#[test]
fn a_dead_connection_is_a_connection_fault() {
    let (mut sd, state, server) = fake::systemd("done", "active");
    server.close().unwrap();
    // What a call on the dead connection really returns, sorted.
    let e = sd
        .manager()
        .and_then(|m| m.load_unit("web.service"))
        .unwrap_err();
    assert_eq!(fault_kind(&e), FaultKind::Connection, "{e:?}");
    // Made by `on`, it cannot reconnect: the fault is reported at once,
    // not waited out.
    let started = Instant::now();
    let err = act(&mut sd, Action::Reload).unwrap_err().to_string();
    assert!(err.contains("D-Bus I/O error"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "waited anyway");
    assert_eq!(state.lock().unwrap().jobs, 0);
}

/// Close `server` once its fake has enqueued a job (the reply to that call
/// given time to leave): the job runs on, its `JobRemoved` is lost.
fn close_after_first_job(
    state: &std::sync::Arc<std::sync::Mutex<fake::State>>,
    server: Connection,
) -> std::thread::JoinHandle<()> {
    let state = std::sync::Arc::clone(state);
    std::thread::spawn(move || {
        while state.lock().unwrap().jobs == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(50));
        server.close().unwrap();
    })
}

#[test]
fn a_job_lost_with_its_connection_is_enqueued_again_on_a_new_one() {
    let first = fake::state("done", "active");
    first.lock().unwrap().hang = true;
    let (client, server) = fake::serve(&first);
    let second = fake::state("done", "active");
    let (spare, _spare_server) = fake::serve(&second);
    let mut spare = Some(spare);
    let mut sd = Systemd::with_reconnect(
        client,
        Some(Box::new(move || {
            spare
                .take()
                .ok_or_else(|| zbus::Error::Failure("no more connections".into()))
        })),
    );
    let closer = close_after_first_job(&first, server);

    act(&mut sd, Action::Reload).unwrap();
    closer.join().unwrap();
    assert_eq!(first.lock().unwrap().jobs, 1);
    // The new connection subscribed again (the fake refuses jobs otherwise)
    // and the reload was asked for once more.
    let second = second.lock().unwrap();
    assert!(second.subscribed);
    assert_eq!(second.jobs, 1);
}

#[test]
fn without_a_reconnector_a_lost_job_is_reported() {
    let state = fake::state("done", "active");
    state.lock().unwrap().hang = true;
    let (client, server) = fake::serve(&state);
    let mut sd = Systemd::on(client);
    let closer = close_after_first_job(&state, server);
    let started = Instant::now();
    let err = act(&mut sd, Action::Reload).unwrap_err().to_string();
    closer.join().unwrap();
    assert_eq!(
        err,
        "reload of web.service: lost the connection to systemd while waiting"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "waited anyway");
}

#[test]
fn systemds_answers_are_not_retried() {
    let state = fake::state("done", "active");
    let (client, _server) = fake::serve(&state);
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let counted = std::rc::Rc::clone(&calls);
    let mut sd = Systemd::with_reconnect(
        client,
        Some(Box::new(move || {
            counted.set(counted.get() + 1);
            Err(zbus::Error::Failure("not expected".into()))
        })),
    );
    // A real error reply from the other end, sorted as an answer.
    let e = sd
        .manager()
        .and_then(|m| m.load_unit("nope.service"))
        .unwrap_err();
    assert_eq!(fault_kind(&e), FaultKind::Answer, "{e:?}");

    let err = sd
        .apply(
            "nope.service",
            Action::Reload,
            Duration::from_secs(30),
            &Cancel::never(),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(err, "unit nope.service not found");
    state.lock().unwrap().result = "failed".into();
    let err = act(&mut sd, Action::Reload).unwrap_err().to_string();
    assert!(err.starts_with("reload of web.service failed"), "{err}");
    assert_eq!(calls.get(), 0, "reconnected for an answer");
}

/// The nginx recipe's first deploy: nginx could not start before a release
/// was current, so `reload` finds it inactive (or failed) and starts it.
#[test]
fn a_reload_of_a_unit_that_is_not_running_starts_it() {
    for state in ["inactive", "failed"] {
        let (mut sd, fake, _server) = fake::systemd("done", state);
        act(&mut sd, Action::Reload).unwrap_or_else(|e| panic!("{state}: {e}"));
        let fake = fake.lock().unwrap();
        assert_eq!(
            (fake.starts, fake.active.as_str()),
            (1, "active"),
            "{state}"
        );
    }
    // A running unit is reloaded, not started.
    let (mut sd, fake, _server) = fake::systemd("done", "active");
    act(&mut sd, Action::Reload).unwrap();
    assert_eq!(fake.lock().unwrap().starts, 0);
    // A start that fails is named as a start.
    let (mut sd, _fake, _server) = fake::systemd("failed", "inactive");
    let err = act(&mut sd, Action::Reload).unwrap_err().to_string();
    assert!(err.starts_with("start of web.service failed"), "{err}");
}

/// `check` reports the unit's state as it is: a failed unit is a problem,
/// an inactive one is what the first activation will start.
#[test]
fn check_tells_the_units_state() {
    let v = |action, state| probe_verdict("nginx.service", action, state, "dead", true, true);
    let failed = v(Action::Reload, "failed").unwrap_err();
    assert!(failed.starts_with("nginx.service is failed"), "{failed}");
    assert_eq!(
        v(Action::Reload, "inactive").unwrap(),
        "inactive: will be started on the first activation"
    );
    assert!(v(Action::Reload, "active").unwrap().contains("can reload"));
    let no_exec_reload = probe_verdict(
        "web.service",
        Action::Reload,
        "active",
        "running",
        false,
        true,
    );
    assert!(no_exec_reload.unwrap_err().contains("no ExecReload="));
    assert!(v(Action::TryRestart, "inactive")
        .unwrap()
        .contains("leaves it stopped"));
}

fn handover(accept: bool, backlog: u32, required: bool) -> Handover {
    Handover {
        socket: "app.socket".into(),
        accept,
        backlog,
        required,
    }
}

#[test]
fn handover_verdict_says_what_a_restart_does_to_connections() {
    let none = handover_verdict("app.service", &[]).unwrap();
    assert!(none.contains("restarts refuse connections"), "{none}");
    let good = handover_verdict("app.service", &[handover(false, 4096, true)]).unwrap();
    assert_eq!(
        good,
        "listener held by app.socket (Accept=no, backlog 4096): restarts queue connections"
    );
    let accept = handover_verdict("app.service", &[handover(true, 4096, true)]).unwrap_err();
    assert!(accept.contains("Accept=yes"), "{accept}");
    let loose = handover_verdict("app.service", &[handover(false, 4096, false)]).unwrap_err();
    assert!(loose.contains("Requires=app.socket"), "{loose}");
    let small = handover_verdict("app.service", &[handover(false, 16, true)]).unwrap_err();
    assert!(small.contains("Backlog=16"), "{small}");
}

#[test]
fn instance_verdict_wants_the_fronted_instance_running_and_takes_any_idle_one() {
    let unit = "app@blue.service";
    let ok = |fronted, state: &str| instance_verdict(unit, fronted, state, "x");
    assert!(ok(true, "active").unwrap().contains("fronted: it serves"));
    assert!(ok(true, "reloading").is_ok());
    for state in ["inactive", "failed", "activating", "deactivating"] {
        let e = ok(true, state).unwrap_err();
        assert!(e.contains("is fronted but"), "{state}: {e}");
    }
    for state in ["inactive", "failed", "active"] {
        let v = ok(false, state).unwrap();
        assert!(v.contains("idle"), "{state}: {v}");
    }
    assert!(ok(false, "failed")
        .unwrap()
        .contains("journalctl -u app@blue.service"));
}

#[test]
fn an_instance_runs_as_root_only_when_its_unit_says_so() {
    let unit = "app@blue.service";
    let e = runs_as_verdict(unit, "", false).unwrap_err();
    assert!(e.contains("runs the release as root"), "{e}");
    assert!(runs_as_verdict(unit, "", true).is_ok());
    assert!(runs_as_verdict(unit, "www-data", false).is_ok());
    assert!(
        runs_as_verdict(unit, "root", false).is_ok(),
        "said on purpose"
    );
}
