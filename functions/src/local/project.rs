//! Reads a Functions app the way the Functions host does: `host.json` at the app root and one
//! `{FunctionName}/function.json` folder per function beside it (functions-custom-handlers.md,
//! "Application structure"). Two layouts are read: the deployment package (`scripts/package.sh`),
//! where the function folders sit beside `host.json`, and the repository, where `host.json` is at
//! the root and the function folders live in `functions/`. Only the triggers ade-backup uses are supported:
//! `serviceBusTrigger {name, queueName}` and `timerTrigger {name, schedule, runOnStartup}`.
//! Binding values may use `%AppSetting%` expansion, as in Azure.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no host.json in {dir}: pass --project-dir pointing at the repository root or an unpacked package")]
    NoHostJson { dir: PathBuf },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: field {field}: {rule}")]
    Field {
        path: PathBuf,
        field: &'static str,
        rule: String,
    },
    #[error("function {function}: schedule {schedule:?}: {rule}")]
    Schedule {
        function: String,
        schedule: String,
        rule: String,
    },
    #[error("app setting %{name}% referenced by {path} is not set")]
    MissingSetting { path: PathBuf, name: String },
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    /// `customHandler.description.arguments`, `%VAR%`-expanded.
    pub arguments: Vec<String>,
    /// `customHandler.description.workingDirectory`, resolved against the app root.
    pub working_directory: Option<PathBuf>,
    /// `extensions.serviceBus.maxConcurrentCalls`.
    pub max_concurrent_calls: Option<usize>,
    /// `extensions.serviceBus.maxAutoLockRenewalDuration` (default 5 min).
    pub max_auto_lock_renewal: Duration,
    /// `functionTimeout`.
    pub function_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub enum Trigger {
    ServiceBus {
        binding: String,
        queue: String,
    },
    Timer {
        binding: String,
        /// As written (NCRONTAB, 6 fields).
        schedule: String,
        cron: Box<cron::Schedule>,
        run_on_startup: bool,
    },
}

#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub name: String,
    pub trigger: Trigger,
}

#[derive(Debug, Clone)]
pub struct Project {
    /// The app root: the folder holding `host.json`.
    pub root: PathBuf,
    /// The folder holding the `{FunctionName}/function.json` folders: `root` in a package,
    /// `root/functions` in the repository.
    pub functions_dir: PathBuf,
    pub host: HostConfig,
    pub functions: Vec<FunctionDef>,
    /// Functions skipped (disabled or with a trigger the local host does not run), with why.
    pub skipped: Vec<(String, String)>,
}

fn read_json(path: &Path) -> Result<serde_json::Value, ProjectError> {
    let bytes = std::fs::read(path).map_err(|source| ProjectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ProjectError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Expands `%NAME%` from app settings; `%%` is a literal percent.
pub fn expand_settings(
    s: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ProjectError> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if name.is_empty() {
            out.push('%');
        } else {
            let value = lookup(name).ok_or_else(|| ProjectError::MissingSetting {
                path: path.to_path_buf(),
                name: name.to_string(),
            })?;
            out.push_str(&value);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a .NET TimeSpan `hh:mm:ss` (optionally `d.hh:mm:ss`).
pub fn parse_timespan(s: &str) -> Option<Duration> {
    let (days, hms) = match s.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, s),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    let [h, m, sec] = parts.as_slice() else {
        return None;
    };
    let h: u64 = h.parse().ok()?;
    let m: u64 = m.parse().ok()?;
    let sec: f64 = sec.parse().ok()?;
    if m >= 60 || !(0.0..60.0).contains(&sec) {
        return None;
    }
    Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60) + Duration::from_secs_f64(sec))
}

/// NCRONTAB (`{second} {minute} {hour} {day} {month} {day-of-week}`, day-of-week 0–6 with
/// 0 = Sunday, functions-bindings-timer.md) → a `cron` crate schedule (day-of-week 1–7 with
/// 1 = Sunday). Only numeric day-of-week values need shifting; names pass through.
pub fn parse_ncrontab(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "must have 6 fields (second minute hour day month day-of-week), found {}",
            fields.len()
        ));
    }
    let dow = shift_day_of_week(fields[5])?;
    let translated = format!(
        "{} {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], fields[4], dow
    );
    cron::Schedule::from_str(&translated)
        .map_err(|e| format!("not a valid NCRONTAB expression: {e}"))
}

fn shift_day_of_week(field: &str) -> Result<String, String> {
    let shift = |token: &str| -> Result<String, String> {
        match token.parse::<u8>() {
            Ok(n @ 0..=6) => Ok((n + 1).to_string()),
            // Some NCRONTAB dialects accept 7 for Sunday too.
            Ok(7) => Ok("1".to_string()),
            Ok(n) => Err(format!("day-of-week {n} is outside 0-6 (0 = Sunday)")),
            Err(_) => Ok(token.to_string()),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let range = range
            .split('-')
            .map(shift)
            .collect::<Result<Vec<_>, _>>()?
            .join("-");
        items.push(match step {
            Some(s) => format!("{range}/{s}"),
            None => range,
        });
    }
    Ok(items.join(","))
}

/// Finds the app root: the folder holding `host.json` — `dir` itself (the repository root or an
/// unpacked package).
pub fn find_root(dir: &Path) -> Result<PathBuf, ProjectError> {
    if dir.join("host.json").is_file() {
        return Ok(dir.to_path_buf());
    }
    Err(ProjectError::NoHostJson {
        dir: dir.to_path_buf(),
    })
}

/// The function folders (`*/function.json`) directly in `dir`, sorted.
fn function_folders(dir: &Path) -> Result<Vec<PathBuf>, ProjectError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ProjectError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("function.json").is_file())
        .collect();
    entries.sort();
    Ok(entries)
}

/// Where the function folders are: beside `host.json` (a package), else in `root/functions` (the
/// repository).
fn find_functions_dir(root: &Path) -> Result<(PathBuf, Vec<PathBuf>), ProjectError> {
    let beside = function_folders(root)?;
    let nested = root.join("functions");
    if beside.is_empty() && nested.is_dir() {
        let entries = function_folders(&nested)?;
        if !entries.is_empty() {
            return Ok((nested, entries));
        }
    }
    Ok((root.to_path_buf(), beside))
}

pub fn load(dir: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Project, ProjectError> {
    let root = find_root(dir)?;
    let host_path = root.join("host.json");
    let host_json = read_json(&host_path)?;
    let host = parse_host(&host_json, &host_path, &root, lookup)?;

    let (functions_dir, entries) = find_functions_dir(&root)?;

    let mut functions = Vec::new();
    let mut skipped = Vec::new();
    for dir in entries {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let path = dir.join("function.json");
        let json = read_json(&path)?;
        match parse_function(&name, &json, &path, lookup)? {
            Ok(f) => functions.push(f),
            Err(why) => skipped.push((name, why)),
        }
    }
    Ok(Project {
        root,
        functions_dir,
        host,
        functions,
        skipped,
    })
}

fn parse_host(
    json: &serde_json::Value,
    path: &Path,
    root: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<HostConfig, ProjectError> {
    let description = &json["customHandler"]["description"];
    let arguments = parse_arguments(&description["arguments"], path, lookup)?;
    let working_directory = description["workingDirectory"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| root.join(s));
    let sb = &json["extensions"]["serviceBus"];
    let max_concurrent_calls = match &sb["maxConcurrentCalls"] {
        serde_json::Value::Null => None,
        v => Some(
            v.as_u64()
                .filter(|n| *n >= 1)
                .map(|n| n as usize)
                .ok_or_else(|| {
                    field_error(
                        path,
                        "extensions.serviceBus.maxConcurrentCalls",
                        "must be a positive integer",
                    )
                })?,
        ),
    };
    let max_auto_lock_renewal = parse_timespan_field(
        path,
        "extensions.serviceBus.maxAutoLockRenewalDuration",
        &sb["maxAutoLockRenewalDuration"],
    )?
    .unwrap_or(Duration::from_secs(300));
    let function_timeout = parse_timespan_field(path, "functionTimeout", &json["functionTimeout"])?;
    Ok(HostConfig {
        arguments,
        working_directory,
        max_concurrent_calls,
        max_auto_lock_renewal,
        function_timeout,
    })
}

fn field_error(path: &Path, field: &'static str, rule: &str) -> ProjectError {
    ProjectError::Field {
        path: path.to_path_buf(),
        field,
        rule: rule.to_string(),
    }
}

/// `customHandler.description.arguments`: absent, or an array of strings (`%VAR%`-expanded).
fn parse_arguments(
    v: &serde_json::Value,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ProjectError> {
    const FIELD: &str = "customHandler.description.arguments";
    const RULE: &str = "must be an array of strings";
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| field_error(path, FIELD, RULE))
                    .and_then(|s| expand_settings(s, path, lookup))
            })
            .collect(),
        _ => Err(field_error(path, FIELD, RULE)),
    }
}

/// An optional TimeSpan field (`hh:mm:ss`).
fn parse_timespan_field(
    path: &Path,
    field: &'static str,
    v: &serde_json::Value,
) -> Result<Option<Duration>, ProjectError> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => parse_timespan(s)
            .map(Some)
            .ok_or_else(|| field_error(path, field, &format!("{s:?} must be a TimeSpan hh:mm:ss"))),
        _ => Err(field_error(
            path,
            field,
            "must be a TimeSpan string hh:mm:ss",
        )),
    }
}

/// `Ok(Err(why))` = a valid function the local host does not run.
fn parse_function(
    name: &str,
    json: &serde_json::Value,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Result<FunctionDef, String>, ProjectError> {
    if json["disabled"].as_bool() == Some(true) {
        return Ok(Err("disabled in function.json".into()));
    }
    let bindings = json["bindings"]
        .as_array()
        .ok_or_else(|| field_error(path, "bindings", "must be an array"))?;
    for b in bindings {
        let trigger = match b["type"].as_str().unwrap_or_default() {
            "serviceBusTrigger" => {
                if b.get("topicName").is_some() {
                    return Ok(Err("topic subscriptions are not supported locally".into()));
                }
                service_bus_trigger(b, path, lookup)?
            }
            "timerTrigger" => timer_trigger(name, b, path, lookup)?,
            _ => continue,
        };
        return Ok(Ok(FunctionDef {
            name: name.to_string(),
            trigger,
        }));
    }
    Ok(Err(
        "no serviceBusTrigger or timerTrigger binding (the local host runs only those)".into(),
    ))
}

/// A trigger binding's `name` (the key of its value in the invocation's `Data`).
fn binding_name(b: &serde_json::Value, path: &Path) -> Result<String, ProjectError> {
    b["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            field_error(
                path,
                "bindings[].name",
                "a trigger binding needs a non-empty name",
            )
        })
}

fn service_bus_trigger(
    b: &serde_json::Value,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Trigger, ProjectError> {
    let queue = b["queueName"].as_str().ok_or_else(|| {
        field_error(
            path,
            "bindings[].queueName",
            "required for serviceBusTrigger",
        )
    })?;
    let queue = expand_settings(queue, path, lookup)?;
    Ok(Trigger::ServiceBus {
        binding: binding_name(b, path)?,
        queue,
    })
}

fn timer_trigger(
    name: &str,
    b: &serde_json::Value,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Trigger, ProjectError> {
    let schedule = b["schedule"]
        .as_str()
        .ok_or_else(|| field_error(path, "bindings[].schedule", "required for timerTrigger"))?;
    let schedule = expand_settings(schedule, path, lookup)?;
    let cron = parse_ncrontab(&schedule).map_err(|rule| ProjectError::Schedule {
        function: name.to_string(),
        schedule: schedule.clone(),
        rule,
    })?;
    let run_on_startup = match &b["runOnStartup"] {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(v) => *v,
        _ => {
            return Err(field_error(
                path,
                "bindings[].runOnStartup",
                "must be true or false",
            ))
        }
    };
    Ok(Trigger::Timer {
        binding: binding_name(b, path)?,
        schedule,
        cron: Box::new(cron),
        run_on_startup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Utc};

    fn no_settings(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn ncrontab_day_of_week_zero_is_sunday() {
        // 2025-01-01 is a Wednesday.
        let start = Utc
            .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let s = parse_ncrontab("0 30 9 * * 0").expect("valid");
        let next = s.after(&start).next().expect("next");
        assert_eq!(next.weekday(), chrono::Weekday::Sun);
        assert_eq!((next.hour(), next.minute()), (9, 30));
        let weekdays = parse_ncrontab("0 0 3 * * 1-5").expect("valid");
        let next = weekdays.after(&start).next().expect("next");
        assert_eq!(next.weekday(), chrono::Weekday::Wed);
        let every_other = parse_ncrontab("0 0 3 * * 0/2").expect("valid");
        assert!(every_other.after(&start).next().is_some());
        assert!(parse_ncrontab("0 0 3 * * MON").is_ok());
    }

    #[test]
    fn ncrontab_rejects_wrong_field_count_and_day() {
        assert!(parse_ncrontab("*/5 * * * *")
            .expect_err("5 fields")
            .contains("6 fields"));
        assert!(parse_ncrontab("0 0 0 * * 8")
            .expect_err("dow 8")
            .contains("0-6"));
    }

    #[test]
    fn expands_app_settings() {
        let lookup = |n: &str| (n == "SWEEP").then(|| "0 0 * * * *".to_string());
        let p = Path::new("x/function.json");
        assert_eq!(
            expand_settings("%SWEEP%", p, &lookup).expect("ok"),
            "0 0 * * * *"
        );
        assert_eq!(
            expand_settings("50%% off", p, &lookup).expect("ok"),
            "50% off"
        );
        assert!(matches!(
            expand_settings("%NOPE%", p, &lookup),
            Err(ProjectError::MissingSetting { .. })
        ));
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("00:05:00"), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_timespan("1.00:00:01"),
            Some(Duration::from_secs(86_401))
        );
        assert_eq!(parse_timespan("5 minutes"), None);
        assert_eq!(parse_timespan("00:61:00"), None);
    }

    /// Writes a small app: `host.json` in `host_dir`, three function folders in `functions_dir`.
    fn write_app(host_dir: &Path, functions_dir: &Path) {
        std::fs::create_dir_all(functions_dir.join("OnEvent")).expect("mkdir");
        std::fs::create_dir_all(functions_dir.join("Sweep")).expect("mkdir");
        std::fs::create_dir_all(functions_dir.join("Web")).expect("mkdir");
        std::fs::write(
            host_dir.join("host.json"),
            r#"{"version":"2.0","functionTimeout":"00:10:00","customHandler":{"description":{"defaultExecutablePath":"ade-backup","arguments":["serve"]}},"extensions":{"serviceBus":{"maxConcurrentCalls":3}}}"#,
        )
        .expect("write");
        std::fs::write(
            functions_dir.join("OnEvent/function.json"),
            r#"{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"message","queueName":"vm-encryption-events","connection":"ServiceBusConnection"}]}"#,
        )
        .expect("write");
        std::fs::write(
            functions_dir.join("Sweep/function.json"),
            r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 0 */6 * * *","runOnStartup":true}]}"#,
        )
        .expect("write");
        std::fs::write(
            functions_dir.join("Web/function.json"),
            r#"{"bindings":[{"type":"httpTrigger","direction":"in","name":"req"}]}"#,
        )
        .expect("write");
    }

    fn assert_sample_app(p: &Project) {
        assert_eq!(p.host.arguments, vec!["serve".to_string()]);
        assert_eq!(p.host.max_concurrent_calls, Some(3));
        assert_eq!(p.host.function_timeout, Some(Duration::from_secs(600)));
        assert_eq!(p.functions.len(), 2);
        assert!(matches!(
            &p.functions[0].trigger,
            Trigger::ServiceBus { binding, queue } if binding == "message" && queue == "vm-encryption-events"
        ));
        assert!(matches!(
            &p.functions[1].trigger,
            Trigger::Timer { run_on_startup: true, binding, .. } if binding == "timer"
        ));
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].0, "Web");
    }

    #[test]
    fn loads_repository_layout() {
        // host.json at the repository root, the function folders in functions/.
        let dir = tempfile::tempdir().expect("tempdir");
        let functions = dir.path().join("functions");
        write_app(dir.path(), &functions);
        let p = load(dir.path(), &no_settings).expect("loads from the repo root");
        assert_eq!(p.root, dir.path());
        assert_eq!(p.functions_dir, functions);
        assert_sample_app(&p);
    }

    #[test]
    fn loads_package_layout() {
        // The deployment package: the function folders beside host.json.
        let dir = tempfile::tempdir().expect("tempdir");
        write_app(dir.path(), dir.path());
        let p = load(dir.path(), &no_settings).expect("loads an unpacked package");
        assert_eq!(p.root, dir.path());
        assert_eq!(p.functions_dir, dir.path());
        assert_sample_app(&p);
    }

    #[test]
    fn no_host_json_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let functions = dir.path().join("functions");
        std::fs::create_dir_all(&functions).expect("mkdir");
        write_app(&functions, &functions);
        // host.json only in functions/ (the old layout) is not an app root.
        assert!(matches!(
            load(dir.path(), &no_settings),
            Err(ProjectError::NoHostJson { .. })
        ));
    }

    #[test]
    fn bad_schedule_names_function_and_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("T")).expect("mkdir");
        std::fs::write(dir.path().join("host.json"), "{}").expect("write");
        std::fs::write(
            dir.path().join("T/function.json"),
            r#"{"bindings":[{"type":"timerTrigger","name":"t","schedule":"* * *"}]}"#,
        )
        .expect("write");
        let err = load(dir.path(), &no_settings)
            .expect_err("bad schedule")
            .to_string();
        assert!(
            err.contains("function T") && err.contains("6 fields"),
            "{err}"
        );
    }
}
