//! The TOML configuration file (`/etc/astra/astra.toml` by default).
//!
//! Its keys are the long names of the command-line options with `_` for `-` (`poll_interval`,
//! `iface`, ...) plus a `[detect.SECTION]` table for the detection settings that `--set` changes.
//! The file is merged into the command line before clap parses it for real: a key becomes the
//! option it names unless the option was given on the command line or in the environment, so
//! flags always win and every value goes through the same parser and checks as the flag.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _, parser::ValueSource};

use crate::{
    cli::Cli,
    engine::DetectConfig,
    error::{Error, Result},
};

pub const DEFAULT_CONFIG: &str = "/etc/astra/astra.toml";

/// Options that are not settings: they say which file to read or only make sense once.
const NOT_CONFIGURABLE: &[&str] = &["config", "set", "help", "version"];

/// Why the command line could not be turned into a [`Cli`].
#[derive(Debug)]
pub enum ArgsError {
    /// Bad flags (or `--help`/`--version`), reported the way clap reports them.
    Clap(clap::Error),
    /// A bad configuration file.
    Config(Error),
}

impl From<clap::Error> for ArgsError {
    fn from(e: clap::Error) -> Self {
        ArgsError::Clap(e)
    }
}

impl From<Error> for ArgsError {
    fn from(e: Error) -> Self {
        ArgsError::Config(e)
    }
}

/// Parses `argv` with the configuration file merged in.
pub fn parse(argv: &[OsString]) -> std::result::Result<Cli, ArgsError> {
    let cmd = Cli::command();
    // The file may supply options the command line must otherwise have, so the first look at
    // the command line must not insist on them.
    let lenient = relax_required(cmd.clone());
    let matches = lenient.try_get_matches_from(argv)?;
    let Some(file) = config_path(&matches)? else {
        let mut cli = Cli::from_arg_matches(&Cli::command().try_get_matches_from(argv)?)?;
        cli.argv = argv.to_vec();
        return Ok(cli);
    };
    let merged = merge(&cmd, &matches, &file)?;
    let mut full = argv.to_vec();
    full.extend(merged.args);
    let mut cli = Cli::from_arg_matches(&Cli::command().try_get_matches_from(&full)?)?;
    cli.config_file = Some(file);
    cli.detect_settings = merged.detect;
    cli.argv = argv.to_vec();
    Ok(cli)
}

/// The `astra run` command line an `astra config check` line stands for: the global options it
/// gave (the config file, directories), then `run`, so the file, environment and defaults
/// merge exactly as they would for the agent.
pub fn as_run(argv: &[OsString]) -> std::result::Result<Vec<OsString>, ArgsError> {
    let cmd = Cli::command();
    let m = relax_required(cmd.clone()).try_get_matches_from(argv)?;
    let mut out = vec![argv.first().cloned().unwrap_or_else(|| "astra".into())];
    for arg in cmd.get_arguments().filter(|a| a.is_global_set()) {
        let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        if m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        for v in m.get_raw(id).into_iter().flatten() {
            let mut o = OsString::from(format!("--{long}="));
            o.push(v);
            out.push(o);
        }
    }
    out.push("run".into());
    Ok(out)
}

fn relax_required(cmd: clap::Command) -> clap::Command {
    cmd.mut_subcommand("run", |s| {
        let ids: Vec<_> = s
            .get_arguments()
            .filter(|a| a.is_required_set())
            .map(|a| a.get_id().clone())
            .collect();
        ids.into_iter()
            .fold(s, |s, id| s.mut_arg(id, |a| a.required(false)))
    })
}

/// The file to read: `--config`/`ASTRA_CONFIG` (which must exist), else the default path if it
/// exists.
fn config_path(m: &ArgMatches) -> Result<Option<PathBuf>> {
    if let Some(p) = m.get_one::<PathBuf>("config") {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "config file {} does not exist",
                p.display()
            )));
        }
        return Ok(Some(p.clone()));
    }
    let default = Path::new(DEFAULT_CONFIG);
    Ok(default.exists().then(|| default.to_owned()))
}

struct Merged {
    /// Options to append to the command line.
    args: Vec<OsString>,
    /// `SECTION.KEY=VALUE` detection settings, applied before any `--set`.
    detect: Vec<String>,
}

fn merge(cmd: &clap::Command, m: &ArgMatches, file: &Path) -> Result<Merged> {
    let text = crate::limits::read_text_capped(file, crate::limits::CONFIG_FILE, "config file")?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::Usage(format!("{}: {}", file.display(), one_line(&e.to_string())))
    })?;
    let run = cmd
        .find_subcommand("run")
        .expect("the run subcommand exists");
    let (sub_name, sub_m) = m.subcommand().unwrap_or(("", m));
    let mut out = Merged {
        args: Vec::new(),
        detect: Vec::new(),
    };
    for (key, value) in &table {
        let bad = |what: String| Error::Usage(format!("{}: {key}: {what}", file.display()));
        let bad_value = |e: ValueError| bad(e.to_string());
        if key == "detect" {
            out.detect = detect_settings(value).map_err(bad_value)?;
            continue;
        }
        let long = key.replace('_', "-");
        let global = cmd.get_arguments().find(|a| a.get_long() == Some(&long));
        let arg = global
            .or_else(|| run.get_arguments().find(|a| a.get_long() == Some(&long)))
            .filter(|a| !NOT_CONFIGURABLE.contains(&a.get_id().as_str()))
            .ok_or_else(|| Error::Usage(format!("{}: unknown key `{key}`", file.display())))?;
        let values = to_strings(arg, value).map_err(bad_value)?;
        if !is_flag(arg) {
            // The option's own parser, so the file accepts exactly what the flag accepts.
            let probe = clap::Command::new("astra")
                .no_binary_name(true)
                .arg(arg.clone().required(false).global(false));
            for v in &values {
                probe
                    .clone()
                    .try_get_matches_from([format!("--{long}={v}")])
                    .map_err(|e| bad(one_line(&e.render().to_string())))?;
            }
        }
        // Run options only mean something to `run` (and `config check`, which parses as run).
        let source_m = match (global.is_some(), sub_name) {
            (true, _) => m,
            (false, "run") => sub_m,
            (false, _) => continue,
        };
        if matches!(
            source_m.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        if is_flag(arg) {
            if values.first().is_some_and(|v| v == "true") {
                out.args.push(format!("--{long}").into());
            }
        } else {
            for v in values {
                out.args.push(format!("--{long}={v}").into());
            }
        }
    }
    // Check the detection settings now, so a bad one is reported against the file.
    DetectConfig::default()
        .apply_settings(&out.detect)
        .map_err(|e| Error::Usage(format!("{}: detect.{e}", file.display())))?;
    Ok(out)
}

fn is_flag(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

fn takes_many(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// The option values a TOML value stands for.
fn to_strings(arg: &clap::Arg, v: &toml::Value) -> std::result::Result<Vec<String>, ValueError> {
    use toml::Value;
    if is_flag(arg) {
        return match v {
            Value::Boolean(b) => Ok(vec![b.to_string()]),
            _ => Err(ValueError::NotBool),
        };
    }
    let scalar = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Float(f) => Ok(f.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(ValueError::NotScalar),
    };
    match v {
        Value::Array(items) if takes_many(arg) => items.iter().map(scalar).collect(),
        Value::Array(_) => Err(ValueError::NotOne),
        v => scalar(v).map(|s| vec![s]),
    }
}

/// `[detect.rules] port_scan_ports = 30` -> `rules.port_scan_ports=30`.
fn detect_settings(v: &toml::Value) -> std::result::Result<Vec<String>, ValueError> {
    let sections = v.as_table().ok_or(ValueError::NotSections)?;
    let mut out = Vec::new();
    for (section, keys) in sections {
        let keys = keys
            .as_table()
            .ok_or_else(|| ValueError::NotTable(section.clone()))?;
        for (k, v) in keys {
            let value = match v {
                toml::Value::String(s) => s.clone(),
                other => serde_json::to_string(other).map_err(ValueError::Json)?,
            };
            out.push(format!("{section}.{k}={value}"));
        }
    }
    Ok(out)
}

/// A configuration value of the wrong shape for its key.
#[derive(Debug, thiserror::Error)]
enum ValueError {
    #[error("expected true or false")]
    NotBool,
    #[error("expected a string or a number")]
    NotScalar,
    #[error("takes one value, not a list")]
    NotOne,
    #[error("expected a table of sections ([detect.rules] ...)")]
    NotSections,
    #[error("detect.{0} must be a table")]
    NotTable(String),
    #[error("{0}")]
    Json(serde_json::Error),
}

fn one_line(s: &str) -> String {
    let s = s.trim().trim_start_matches("error: ");
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with("For more"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> Tmp {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("astra-cfg-{}-{n}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        Tmp(p)
    }

    fn argv(f: &Tmp, rest: &[&str]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["astra".into(), "--config".into(), f.0.clone().into()];
        v.extend(rest.iter().map(OsString::from));
        v
    }

    fn run_args(cli: Cli) -> crate::cli::agent::RunArgs {
        match cli.command {
            Command::Run(a) => *a,
            other => panic!("not run: {other:?}"),
        }
    }

    fn err(f: &Tmp, rest: &[&str]) -> String {
        match parse(&argv(f, rest)) {
            Err(ArgsError::Config(e)) => e.to_string(),
            Err(ArgsError::Clap(e)) => panic!("clap error: {e}"),
            Ok(c) => panic!("parsed: {c:?}"),
        }
    }

    #[test]
    fn file_supplies_options_and_flags_win() {
        let f = file(
            "iface = [\"lo\"]\npoll_interval = \"3s\"\nflow_capacity = 4096\ndry_run = true\n\
             state_dir = \"/tmp/x\"\n[detect.rules]\nport_scan_ports = 30\n",
        );
        let cli = parse(&argv(&f, &["run", "--poll-interval", "2s"])).unwrap();
        assert_eq!(cli.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cli.detect_settings, vec!["rules.port_scan_ports=30"]);
        let a = run_args(cli);
        assert_eq!(a.ifaces, vec!["lo"]);
        assert_eq!(a.poll_interval, std::time::Duration::from_secs(2));
        assert_eq!(a.flow_capacity, 4096);
        assert!(a.dry_run);
        // A list given on the command line replaces the file's list rather than adding to it.
        let a = run_args(parse(&argv(&f, &["run", "--iface", "eth9"])).unwrap());
        assert_eq!(a.ifaces, vec!["eth9"]);
        // Globals from the file reach the other verbs too.
        let cli = parse(&argv(&f, &["list", "--state-dir", "/tmp/y"])).unwrap();
        assert_eq!(cli.state_dir, PathBuf::from("/tmp/y"));
        let cli = parse(&argv(&f, &["list"])).unwrap();
        assert_eq!(cli.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn start_reload_and_check_refuse_the_same_values() {
        for (text, key) in [
            (
                "poll_interval = \"0s\"\n",
                "poll_interval must be greater than 0",
            ),
            ("flow_capacity = 0\n", "flow_capacity 0 is out of range"),
            (
                "flow_capacity = 4294967295\n",
                "flow_capacity 4294967295 is out of range",
            ),
            (
                "idle_timeout = \"0s\"\n",
                "idle_timeout must be greater than 0",
            ),
            ("feed_every = \"0s\"\n", "feed_every must be greater than 0"),
        ] {
            let f = file(&format!("iface = [\"lo\"]\n{text}"));
            // `astra run` and a SIGHUP reload both build the configuration here...
            let e = crate::cli::agent::reload_config(&argv(&f, &["run"])).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
            assert_eq!(e.exit_code(), 2);
            // ...and `astra config check` reads the same line as if it said `run`.
            let check = as_run(&argv(&f, &["config", "check"])).unwrap();
            let e = crate::cli::agent::reload_config(&check).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        let f = file("iface = [\"lo\"]\npoll_interval = \"500ms\"\n");
        assert!(crate::cli::agent::reload_config(&argv(&f, &["run"])).is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let f = file("iface = [\"lo\"]\npoll_intervall = \"1s\"\n");
        assert!(err(&f, &["run"]).contains("unknown key `poll_intervall`"));
        let f = file("poll_interval = \"soon\"\n");
        let e = err(&f, &["run"]);
        assert!(e.contains("poll_interval:") && e.contains("soon"), "{e}");
        let f = file("flow_capacity = \"many\"\n");
        assert!(err(&f, &["run"]).contains("flow_capacity:"));
        let f = file("xdp_mode = \"turbo\"\n");
        assert!(err(&f, &["run"]).contains("xdp_mode:"));
        let f = file("dry_run = \"yes\"\n");
        assert!(err(&f, &["run"]).contains("dry_run: expected true or false"));
        let f = file("metrics_addr = [\"a\", \"b\"]\n");
        assert!(err(&f, &["run"]).contains("metrics_addr: takes one value"));
        let f = file("[detect.rules]\nport_scan_portz = 3\n");
        let e = err(&f, &["run", "--iface", "lo"]);
        assert!(
            e.contains("detect.") && e.contains("rules.port_scan_portz"),
            "{e}"
        );
        let f = file("[detect.rules]\nport_scan_ports = \"many\"\n");
        assert!(err(&f, &["run"]).contains("rules.port_scan_ports"));
        let f = file("set = [\"rules.port_scan_ports=3\"]\n");
        assert!(err(&f, &["run"]).contains("unknown key `set`"));
        let f = file("poll_interval = \n");
        assert!(err(&f, &["run"]).contains(&f.0.display().to_string()));
        // A bad file is an error for every verb, not only for run.
        let f = file("bogus = 1\n");
        assert!(err(&f, &["list"]).contains("unknown key `bogus`"));
    }

    #[test]
    fn config_check_lines_become_run_lines_with_their_globals() {
        let line = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let run = as_run(&line(&[
            "astra",
            "--state-dir",
            "check",
            "config",
            "check",
            "--json",
            "--pin-dir=/p",
        ]))
        .unwrap();
        assert_eq!(
            run,
            line(&["astra", "--pin-dir=/p", "--state-dir=check", "run"])
        );
    }

    #[test]
    fn a_named_file_must_exist_but_the_default_may_not() {
        let missing = vec![
            OsString::from("astra"),
            "--config".into(),
            "/nonexistent/astra.toml".into(),
            "list".into(),
        ];
        match parse(&missing) {
            Err(ArgsError::Config(e)) => assert!(e.to_string().contains("does not exist")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn required_options_still_required_without_the_file_supplying_them() {
        let f = file("poll_interval = \"2s\"\n");
        // An interface or a conn.log to follow: one of the two, which clap cannot say alone.
        let cli = parse(&argv(&f, &["run"])).expect("parses");
        let e = crate::cli::agent::agent_config(cli).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs at least one --iface or --zeek-conn-log"),
            "{e}"
        );
        assert_eq!(e.exit_code(), 2);
    }
}
