//! `astra bench` writes the promised JSON: a list of {name, value, unit, baseline_name,
//! baseline_value, ratio}, with the ratio equal to value / baseline. Only its shape and
//! arithmetic are checked; speeds are for people to read, never asserted.
use serde_json::Value;

#[test]
fn bench_json_has_the_promised_shape() {
    let json = std::env::temp_dir().join(format!("astra-bench-test-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_astra"))
        .args(["bench", "--only", "forest", "--json"])
        .arg(&json)
        .output()
        .expect("run astra bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "astra bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("machine:"), "{stdout}");
    let rows: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let rows = rows.as_array().expect("a JSON list");
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in rows {
        let obj = r.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "baseline_name",
                "baseline_value",
                "name",
                "ratio",
                "unit",
                "value"
            ],
            "{r:#}"
        );
        let value = r["value"].as_f64().unwrap();
        assert!(value > 0.0, "{r:#}");
        if let Some(b) = r["baseline_value"].as_f64() {
            let ratio = r["ratio"].as_f64().unwrap();
            assert!(
                (ratio - value / b).abs() < 1e-9 * ratio.abs().max(1.0),
                "{r:#}"
            );
        }
    }
}
