//! `-o/--output json|table|tsv`, the formats Azure CLI users expect, on every command.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable (the default). `text` is accepted for earlier scripts.
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
    /// Tab-separated values, one record per line, no header (for `cut`/`awk`, like `az -o tsv`).
    Tsv,
}

/// Pretty JSON of `value`, newline-terminated.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// TSV of a JSON value the way `az -o tsv` does it: an array gives one line per element, an
/// object one line of its scalar fields' values in order (nested values as compact JSON).
pub fn tsv(value: &serde_json::Value) -> String {
    fn cell(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.replace(['\t', '\n', '\r'], " "),
            other => other.to_string().replace(['\t', '\n', '\r'], " "),
        }
    }
    fn line(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(m) => {
                m.values().map(cell).collect::<Vec<_>>().join("\t") + "\n"
            }
            other => cell(other) + "\n",
        }
    }
    match value {
        serde_json::Value::Array(a) => a.iter().map(line).collect(),
        other => line(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_is_one_line_per_record() {
        let v = serde_json::json!([{"a": "x\ty", "b": 2, "c": null}, {"a": "z", "b": 3, "c": [1]}]);
        assert_eq!(tsv(&v), "x y\t2\t\nz\t3\t[1]\n");
    }
}
