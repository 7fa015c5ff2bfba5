//! The web UI in a real browser (Debian's Chromium, driven by Playwright through
//! `tools/ui/ui.mjs`), against an agent attached in a lab namespace. Every scenario fails on
//! any console error or exception in the page, CSP refusals included. What the UI changes is
//! checked where it matters: in the kernel, with packets.
use std::time::Duration;

use astra::lab::browser::{self, Scenario};
use serde_json::Value;

use crate::kit::{Agent, Lab, ScratchDir, cli_ok, pin_dir, state_dir};

struct Ui {
    lab: Lab,
    pin: ScratchDir,
    state: ScratchDir,
    agent: Agent,
}

impl Ui {
    fn start() -> Option<Ui> {
        if !crate::kit::privileged() {
            return None;
        }
        let lab = Lab::quiet_v4();
        let (pin, state) = (pin_dir(), state_dir());
        let agent = Agent::start(&lab.ns_b, &lab.if_b, pin.path(), state.path(), &[]);
        Some(Ui {
            lab,
            pin,
            state,
            agent,
        })
    }

    fn token(&self, file: &str) -> String {
        std::fs::read_to_string(self.state.path().join(file))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn run(&self, name: &str, token: Option<&str>, arg: &str) -> Value {
        let s = Scenario {
            name,
            token,
            arg,
            ..Default::default()
        };
        browser::run(
            &format!("/var/run/netns/{}", self.agent.ns),
            self.agent.api_port,
            &s,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.agent.log()))
    }
}

#[test]
fn the_overview_draws_traffic_from_the_stream() {
    let Some(ui) = Ui::start() else { return };
    let (a, b) = (ui.lab.a_v4(), ui.lab.b_v4());
    assert_eq!(ui.lab.deliver(&a, &b, 50), 50);
    ui.agent.settle();
    let r = ui.run("overview", None, &ui.lab.if_b);
    let legend = r["legend"].as_array().unwrap();
    let line = format!("{} ingress pass", ui.lab.if_b);
    assert!(
        legend
            .iter()
            .any(|l| l.as_str().unwrap().starts_with(&line)),
        "{r}"
    );
    assert_eq!(r["update_ms"].as_array().unwrap().len(), 3, "{r}");
}

#[test]
fn a_block_from_the_ui_drops_in_the_kernel_and_its_removal_lets_through() {
    let Some(ui) = Ui::start() else { return };
    let (a, b) = (ui.lab.a_v4(), ui.lab.b_v4());
    let admin = ui.token("api.token");
    assert_eq!(ui.lab.deliver(&a, &b, 5), 5);

    ui.run("block", Some(&admin), &a);
    assert_eq!(
        ui.lab.deliver(&a, &b, 5),
        0,
        "the UI's block let packets by"
    );
    let listed = cli_ok(ui.pin.path(), ui.state.path(), &["list", "--json"]);
    assert!(listed.contains("blocked in the browser test"), "{listed}");

    ui.run("unblock", Some(&admin), &a);
    assert_eq!(
        ui.lab.deliver(&a, &b, 5),
        5,
        "the UI's removal did not let through"
    );
}

#[test]
fn the_viewer_sees_the_lists_and_changes_nothing() {
    let Some(ui) = Ui::start() else { return };
    cli_ok(ui.pin.path(), ui.state.path(), &["block", "198.18.250.1"]);
    let viewer = ui.token("api.viewer.token");
    let r = ui.run("viewer", Some(&viewer), "198.18.250.2");
    assert_eq!(r["post_status"], 403, "{r}");
    assert_eq!(r["rows"], 1, "{r}");
    let listed = cli_ok(ui.pin.path(), ui.state.path(), &["list", "--json"]);
    assert!(!listed.contains("198.18.250.2"), "{listed}");
}

#[test]
fn the_incident_of_a_scan_renders_with_its_evidence() {
    let Some(ui) = Ui::start() else { return };
    let (a, b) = (ui.lab.a_v4(), ui.lab.b_v4());
    astra::lab::traffic::connect_scan(ui.lab.a(), b.parse().unwrap(), (1..=100).collect()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (_, body) = ui.agent.api("GET", "/api/v1/incidents", None, None);
        let list: Value = serde_json::from_str(&body).unwrap();
        if let Some(i) = list.as_array().and_then(|l| l.first()) {
            break i["id"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no incident:\n{}",
            ui.agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let r = ui.run("incident", None, &format!("{id} {a}"));
    assert!(r["flows"].as_u64().unwrap() > 0, "{r}");
    let actions = r["actions"].to_string();
    assert!(actions.contains(&format!("blocked {a}")), "{r}");
}
