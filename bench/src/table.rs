//! `--table FILE...`: the side-by-side table `compare.sh` prints from the JSON lines of
//! several runs, and the last line `ratio tidings/redis: X.XX` (online messages/s, Redis at
//! the load's payload). Before it, when the runs are there (issue 19):
//! `ratio tidings/redis at equal bytes: X.XX` (against the Redis run whose payload is the
//! 16,000 bytes a Tidings message body always has) and `relay CPU per message / floor: X.XX`
//! (the online run's relay CPU against `tidings-bench --floor` of the same run). Before
//! those, from the floor's QUIC at best: the lowest `relay CPU per message / floor` and the
//! highest ratio at equal bytes (a relay on one core) that QUIC leaves reachable here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// One row: label, mode of the run it comes from, JSON pointer into that run's report.
const ROWS: &[(&str, &str, &str)] = &[
    ("messages/s (online)", "online", "/msgs_per_sec"),
    ("latency p50 ms (online)", "online", "/latency_ms/p50"),
    ("latency p99 ms (online)", "online", "/latency_ms/p99"),
    ("latency max ms (online)", "online", "/latency_ms/max"),
    (
        "server CPU us/message (online)",
        "online",
        "/relay_cpu_us_per_msg",
    ),
    (
        "load generator CPU us/message (online)",
        "online",
        "/client_cpu_us_per_msg",
    ),
    ("server RSS KiB after load", "online", "/relay_rss_kib"),
    (
        "RSS KiB per idle client",
        "online",
        "/rss_per_idle_client_kib",
    ),
    ("new connections/s", "online", "/new_connections_per_sec"),
    ("offered messages/s (paced)", "paced", "/rate"),
    ("latency p50 ms (paced)", "paced", "/latency_ms/p50"),
    ("latency p99 ms (paced)", "paced", "/latency_ms/p99"),
    ("latency max ms (paced)", "paced", "/latency_ms/max"),
    (
        "server CPU us/message (paced)",
        "paced",
        "/relay_cpu_us_per_msg",
    ),
    (
        "stored messages/s (offline)",
        "offline",
        "/store_msgs_per_sec",
    ),
    (
        "drained messages/s (offline)",
        "offline",
        "/drain_msgs_per_sec",
    ),
    (
        "messages/s store+drain (offline)",
        "offline",
        "/msgs_per_sec",
    ),
    (
        "server CPU us/message (offline)",
        "offline",
        "/relay_cpu_us_per_msg",
    ),
    (
        "disk bytes per stored message",
        "offline",
        "/disk_bytes_per_stored_message",
    ),
    ("body bytes sent per message", "online", "/body_bytes"),
];

/// The rows of the bindings table (online runs over HTTP/3, HTTP/2 and WebSocket).
const BINDING_ROWS: &[(&str, &str)] = &[
    ("messages/s", "/msgs_per_sec"),
    ("server CPU us/message", "/relay_cpu_us_per_msg"),
    ("new connections/s", "/new_connections_per_sec"),
    ("RSS KiB per idle client", "/rss_per_idle_client_kib"),
    ("latency p50 ms", "/latency_ms/p50"),
    ("latency p99 ms", "/latency_ms/p99"),
];

/// Payload bytes from which a Redis run counts as moving what a Tidings message moves.
const EQUAL_BYTES: u64 = 16_000;

/// Reads the last JSON line of each file and renders the table and the ratio line.
pub fn render(files: &[PathBuf]) -> Result<String> {
    // (target, mode) -> report
    let mut runs: BTreeMap<(String, String), Value> = BTreeMap::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| anyhow!("{} holds no JSON line", file.display()))?;
        let report: Value =
            serde_json::from_str(line).with_context(|| format!("parsing {}", file.display()))?;
        let field = |name: &str| report.get(name).and_then(Value::as_str).map(str::to_string);
        // A Tidings run over a TCP binding is a column of its own ("tidings h2"), in the
        // bindings table below the main one.
        let body = report.get("body_bytes").and_then(Value::as_u64);
        let target = match (field("target"), field("binding")) {
            (Some(t), Some(b)) if b != "h3" => format!("{t} {b}"),
            // Redis moving as many bytes as Tidings (16,000-byte payloads): its own column.
            (Some(t), _) if t == "redis" && body.is_some_and(|b| b >= EQUAL_BYTES) => {
                "redis equal".to_string()
            }
            (t, _) => t.unwrap_or_default(),
        };
        let key = (target, field("mode").unwrap_or_default());
        runs.insert(key, report);
    }
    let targets = ["tidings", "redis"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>12} {:>12}",
        "figure", targets[0], targets[1]
    );
    for (label, mode, pointer) in ROWS {
        let cell = |target: &str| {
            runs.get(&(target.to_string(), mode.to_string()))
                .and_then(|r| r.pointer(pointer))
                .map(show)
                .unwrap_or_else(|| "-".to_string())
        };
        let _ = writeln!(
            out,
            "{:<40} {:>12} {:>12}",
            label,
            cell(targets[0]),
            cell(targets[1])
        );
    }
    // The bindings: the same online load over HTTP/3 (QUIC) and over the TCP bindings.
    let bindings: Vec<&str> = ["tidings", "tidings h2", "tidings ws"]
        .into_iter()
        .filter(|t| runs.contains_key(&(t.to_string(), "online".to_string())))
        .collect();
    if bindings.len() > 1 {
        let _ = writeln!(out);
        let mut head = format!("{:<40}", "binding (online)");
        for t in &bindings {
            let name = match *t {
                "tidings" => "h3 (QUIC)",
                "tidings h2" => "h2 (TCP)",
                _ => "ws (TCP)",
            };
            let _ = write!(head, " {name:>12}");
        }
        let _ = writeln!(out, "{head}");
        for (label, pointer) in BINDING_ROWS {
            let mut line = format!("{label:<40}");
            for t in &bindings {
                let cell = runs
                    .get(&(t.to_string(), "online".to_string()))
                    .and_then(|r| r.pointer(pointer))
                    .map(show)
                    .unwrap_or_else(|| "-".to_string());
                let _ = write!(line, " {cell:>12}");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    let online = |target: &str, pointer: &str| {
        runs.get(&(target.to_string(), "online".to_string()))
            .and_then(|r| r.pointer(pointer))
            .and_then(Value::as_f64)
    };
    let rate = |target: &str| online(target, "/msgs_per_sec");
    let floor = runs
        .get(&("floor".to_string(), "floor".to_string()))
        .and_then(|r| r.pointer("/sum_us"))
        .and_then(Value::as_f64);
    if let Some(equal) = runs.get(&("redis equal".to_string(), "online".to_string())) {
        let cell = |p: &str| {
            equal
                .pointer(p)
                .map(show)
                .unwrap_or_else(|| "-".to_string())
        };
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "redis at 16,000-byte payloads (online): {} messages/s, server CPU {} us/message",
            cell("/msgs_per_sec"),
            cell("/relay_cpu_us_per_msg")
        );
    }
    if let Some(f) = runs.get(&("floor".to_string(), "floor".to_string())) {
        let cell = |p: &str| f.pointer(p).map(show).unwrap_or_else(|| "-".to_string());
        let _ = writeln!(
            out,
            "floor us/message: noise {} + signatures {} + re-encryption {} + durable append {} \
             ({} per fdatasync) = {}",
            cell("/noise_us"),
            cell("/signature_us"),
            cell("/reencrypt_us"),
            cell("/append_us"),
            cell("/group"),
            cell("/sum_us")
        );
        let _ = writeln!(
            out,
            "floor with QUIC at best (not in the ratio below): {} + {} = {} us/message",
            cell("/sum_us"),
            cell("/quic_us"),
            cell("/with_quic_us")
        );
    }
    let with_quic = runs
        .get(&("floor".to_string(), "floor".to_string()))
        .and_then(|r| r.pointer("/with_quic_us"))
        .and_then(Value::as_f64);
    // What QUIC alone leaves reachable on this machine: the floor's ratio with QUIC at best
    // in it, and the equal-bytes ratio of a relay on one core that spent just that.
    if let (Some(f), Some(q)) = (floor, with_quic) {
        if f > 0.0 && q > 0.0 {
            let _ = writeln!(
                out,
                "lowest relay CPU per message / floor QUIC allows here: {:.2}",
                q / f
            );
            if let Some(r) = rate("redis equal").filter(|r| *r > 0.0) {
                let _ = writeln!(
                    out,
                    "highest ratio at equal bytes QUIC allows here (relay on one core): {:.2}",
                    1e6 / q / r
                );
            }
        }
    }
    match (rate("tidings"), rate("redis equal")) {
        (Some(t), Some(r)) if r > 0.0 => {
            let _ = writeln!(out, "ratio tidings/redis at equal bytes: {:.2}", t / r);
        }
        _ => {
            let _ = writeln!(
                out,
                "ratio tidings/redis at equal bytes: n/a (an online run is missing)"
            );
        }
    }
    match (online("tidings", "/relay_cpu_us_per_msg"), floor) {
        (Some(cpu), Some(f)) if f > 0.0 => {
            let _ = writeln!(out, "relay CPU per message / floor: {:.2}", cpu / f);
        }
        _ => {
            let _ = writeln!(
                out,
                "relay CPU per message / floor: n/a (the online run or the floor is missing)"
            );
        }
    }
    match (rate("tidings"), rate("redis")) {
        (Some(t), Some(r)) if r > 0.0 => {
            let _ = writeln!(out, "ratio tidings/redis: {:.2}", t / r);
        }
        _ => {
            let _ = writeln!(out, "ratio tidings/redis: n/a (an online run is missing)");
        }
    }
    Ok(out)
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
            Some(f) => format!("{f:.2}"),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ends_with_the_ratio_of_online_rates() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.json");
        let r = dir.path().join("r.json");
        std::fs::write(
            &t,
            r#"{"target":"tidings","mode":"online","msgs_per_sec":300.0,"latency_ms":{"p50":1.5,"p99":2.0,"max":3.0}}"#,
        )
        .unwrap();
        std::fs::write(
            &r,
            "noise\n{\"target\":\"redis\",\"mode\":\"online\",\"msgs_per_sec\":200.0}\n",
        )
        .unwrap();
        let table = render(&[t, r]).unwrap();
        assert_eq!(table.lines().last(), Some("ratio tidings/redis: 1.50"));
        assert!(table.contains("latency p50 ms"));
    }

    #[test]
    fn equal_bytes_and_floor_ratios_come_just_before_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, json) in [
            (
                "t",
                r#"{"target":"tidings","mode":"online","body_bytes":16000,"msgs_per_sec":1000.0,"relay_cpu_us_per_msg":300.0}"#,
            ),
            (
                "r",
                r#"{"target":"redis","mode":"online","body_bytes":1024,"msgs_per_sec":20000.0}"#,
            ),
            (
                "re",
                r#"{"target":"redis","mode":"online","body_bytes":16000,"msgs_per_sec":5000.0,"relay_cpu_us_per_msg":110.0}"#,
            ),
            (
                "f",
                concat!(
                    "floor, us per message\n",
                    r#"{"target":"floor","mode":"floor","sum_us":120.0,"noise_us":40.0,"quic_us":80.0,"with_quic_us":200.0}"#
                ),
            ),
        ] {
            let f = dir.path().join(format!("{name}.json"));
            std::fs::write(&f, json).unwrap();
            files.push(f);
        }
        let table = render(&files).unwrap();
        let last: Vec<&str> = table.lines().rev().take(3).collect();
        assert_eq!(
            last,
            vec![
                "ratio tidings/redis: 0.05",
                "relay CPU per message / floor: 2.50",
                "ratio tidings/redis at equal bytes: 0.20",
            ],
            "{table}"
        );
        // The 1 KiB Redis run stays the main table's column.
        let rates = table
            .lines()
            .find(|l| l.starts_with("messages/s (online)"))
            .unwrap();
        assert!(rates.contains("20000"), "{rates}");
        assert!(table.contains("= 120"), "{table}");
        // With QUIC at best: 200 us is 1.67 times the floor, and 5,000 messages/s (1e6 /
        // 200) against Redis's 5,000 at equal bytes is 1.00.
        assert!(
            table.contains("lowest relay CPU per message / floor QUIC allows here: 1.67"),
            "{table}"
        );
        assert!(
            table.contains(
                "highest ratio at equal bytes QUIC allows here (relay on one core): 1.00"
            ),
            "{table}"
        );
    }

    #[test]
    fn missing_run_gives_no_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.json");
        std::fs::write(
            &t,
            r#"{"target":"tidings","mode":"online","msgs_per_sec":3.0}"#,
        )
        .unwrap();
        let table = render(&[t]).unwrap();
        assert!(table.lines().last().unwrap().contains("n/a"));
    }

    #[test]
    fn tcp_binding_runs_get_a_table_of_their_own_before_the_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (name, binding, rate) in [("h3", "h3", 900.0), ("h2", "h2", 1200.0)] {
            let f = dir.path().join(format!("{name}.json"));
            std::fs::write(
                &f,
                format!(
                    r#"{{"target":"tidings","mode":"online","binding":"{binding}","msgs_per_sec":{rate}}}"#
                ),
            )
            .unwrap();
            files.push(f);
        }
        let r = dir.path().join("r.json");
        std::fs::write(
            &r,
            r#"{"target":"redis","mode":"online","msgs_per_sec":300.0}"#,
        )
        .unwrap();
        files.push(r);
        let table = render(&files).unwrap();
        assert!(
            table.contains("h3 (QUIC)") && table.contains("h2 (TCP)"),
            "{table}"
        );
        let rates = table
            .lines()
            // The bindings table's row (the main table's rows say more after the label).
            .find(|l| l.starts_with(&format!("{:<40}", "messages/s")))
            .unwrap();
        assert!(rates.contains("900") && rates.contains("1200"), "{rates}");
        // The ratio is still HTTP/3 against Redis, and still the last line.
        assert_eq!(table.lines().last().unwrap(), "ratio tidings/redis: 3.00");
    }
}
