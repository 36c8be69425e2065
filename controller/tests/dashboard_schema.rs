//! `dashboards/swarm-upgrade.json` against Grafana's own published dashboard model (the JSON
//! Schema of the Grafana Foundation SDK, committed under `dashboards/testdata/grafana-schema`,
//! see its README): the dashboard, each panel type's options and field config, and every
//! Prometheus query. Broken copies of the dashboard are refused, so the check can fail.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn read_json(rel: &str) -> Value {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

fn schema_file(name: &str) -> Value {
    read_json(&format!(
        "dashboards/testdata/grafana-schema/{name}.jsonschema.json"
    ))
}

/// Where the JSON Schema rendering of Grafana's model is narrower than the model: for these,
/// the SDK's own TypeScript types (same generator, same commit) say `any` (an override's value
/// is `"short"`, `60` or `{...}`; a matcher's options a field name or a regex), or `string |
/// Record<string, any>` for a variable's query, where the JSON Schema wants objects. They are
/// widened back to the model here; the committed files stay as published.
const WIDER_IN_THE_MODEL: [(&str, &str); 3] = [
    ("/DynamicConfigValue/properties/value", "any"),
    ("/MatcherConfig/properties/options", "any"),
    (
        "/VariableModel/properties/query",
        "string | Record<string, any>",
    ),
];

fn as_in_the_model(schema: &mut Value) {
    for (pointer, model) in WIDER_IN_THE_MODEL {
        if let Some(narrow) = schema["definitions"].pointer_mut(pointer) {
            *narrow = match model {
                "any" => json!({}),
                _ => json!({ "type": ["string", "object"] }),
            };
        }
    }
}

/// A validator for `#/definitions/{definition}` of a schema file (its own definitions kept).
fn validator(file: &str, definition: &str) -> jsonschema::Validator {
    let mut schema = schema_file(file);
    as_in_the_model(&mut schema);
    let rooted = json!({
        "$schema": schema["$schema"],
        "$ref": format!("#/definitions/{definition}"),
        "definitions": schema["definitions"],
    });
    jsonschema::validator_for(&rooted)
        .unwrap_or_else(|e| panic!("{file}.jsonschema.json#{definition} is no JSON Schema: {e}"))
}

/// The dashboard as Grafana stores it. `__inputs` and `__requires` belong to the "export for
/// sharing" wrapper, which Grafana's import reads and drops; they are not in the model.
fn model(dashboard: &Value) -> Value {
    let mut model = dashboard.clone();
    let map = model.as_object_mut().expect("the dashboard is an object");
    map.remove("__inputs");
    map.remove("__requires");
    model
}

/// The panels of the dashboard, rows' nested panels included, without the rows.
fn visual_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = vec![];
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.extend(panel["panels"].as_array().into_iter().flatten());
        if panel["type"] != "row" {
            out.push(panel);
        }
    }
    out
}

/// Every violation of Grafana's schemas, each with where it is.
fn violations(dashboard: &Value) -> Vec<String> {
    let mut found: Vec<String> = validator("dashboard", "Dashboard")
        .iter_errors(&model(dashboard))
        .map(|e| format!("dashboard {}: {e}", e.instance_path()))
        .collect();
    // The dashboard's `panels` is a oneOf (panel or row), which hides where a panel is wrong:
    // each panel is checked again as what it is.
    let (as_panel, as_row) = (
        validator("dashboard", "Panel"),
        validator("dashboard", "RowPanel"),
    );
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let schema = if panel["type"] == "row" {
            &as_row
        } else {
            &as_panel
        };
        let title = panel["title"].as_str().unwrap_or("?");
        found.extend(
            schema
                .iter_errors(panel)
                .map(|e| format!("panel {title:?} {}: {e}", e.instance_path())),
        );
    }
    let query = validator("prometheus", "Dataquery");
    for panel in visual_panels(dashboard) {
        let kind = panel["type"].as_str().unwrap_or("?");
        let title = panel["title"].as_str().unwrap_or("?");
        let plugin = match kind {
            "timeseries" | "stat" | "bargauge" | "table" => kind,
            other => {
                found.push(format!(
                    "panel {title:?}: type {other:?} has no committed schema (add it to dashboards/testdata/grafana-schema)"
                ));
                continue;
            }
        };
        let options = validator(plugin, "Options");
        found.extend(
            options
                .iter_errors(&panel["options"])
                .map(|e| format!("panel {title:?} options{}: {e}", e.instance_path())),
        );
        let custom = &panel["fieldConfig"]["defaults"]["custom"];
        if schema_file(plugin)["definitions"]
            .get("FieldConfig")
            .is_some()
            && !custom.is_null()
        {
            found.extend(
                validator(plugin, "FieldConfig")
                    .iter_errors(custom)
                    .map(|e| {
                        format!(
                            "panel {title:?} fieldConfig.defaults.custom{}: {e}",
                            e.instance_path()
                        )
                    }),
            );
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            found.extend(
                query
                    .iter_errors(target)
                    .map(|e| format!("panel {title:?} query{}: {e}", e.instance_path())),
            );
        }
    }
    found
}

fn shipped() -> Value {
    read_json("dashboards/swarm-upgrade.json")
}

#[test]
fn the_dashboard_matches_grafanas_published_model() {
    let dashboard = shipped();
    assert!(
        visual_panels(&dashboard).len() >= 10,
        "the panels were not found"
    );
    let found = violations(&dashboard);
    assert!(
        found.is_empty(),
        "dashboards/swarm-upgrade.json breaks Grafana's schema:\n{}",
        found.join("\n")
    );
}

/// Breaks a copy of the dashboard in one place.
type Breakage = fn(&mut Value);

/// Each broken copy must be refused where it is broken; else the check above proves nothing.
#[test]
fn broken_dashboards_are_refused() {
    let breakages: [(&str, Breakage); 6] = [
        ("\"schemaVersion\" is a required property", |d| {
            d.as_object_mut().unwrap().remove("schemaVersion");
        }),
        ("dashboard /graphTooltip", |d| {
            d["graphTooltip"] = json!("shared")
        }),
        ("/gridPos/h", |d| {
            first_of(d, "timeseries")["gridPos"]["h"] = json!("tall")
        }),
        ("options/legend/displayMode", |d| {
            first_of(d, "timeseries")["options"]["legend"]["displayMode"] = json!("sideways")
        }),
        ("options/reduceOptions/calcs", |d| {
            first_of(d, "stat")["options"]["reduceOptions"]["calcs"] = json!("lastNotNull")
        }),
        ("query/format", |d| {
            first_of(d, "table")["targets"][0]["format"] = json!("csv")
        }),
    ];
    for (where_, break_it) in breakages {
        let mut dashboard = shipped();
        break_it(&mut dashboard);
        let found = violations(&dashboard);
        assert!(
            found.iter().any(|v| v.contains(where_)),
            "breaking {where_} went unnoticed: {found:?}"
        );
    }
}

/// The first panel of `kind`, rows' nested panels included.
fn first_of<'a>(dashboard: &'a mut Value, kind: &str) -> &'a mut Value {
    let path = {
        let mut path = None;
        for (i, panel) in dashboard["panels"].as_array().unwrap().iter().enumerate() {
            if panel["type"] == kind {
                path = Some((i, None));
                break;
            }
            let nested = panel["panels"].as_array().into_iter().flatten();
            if let Some(j) = nested.clone().position(|p| p["type"] == kind) {
                path = Some((i, Some(j)));
                break;
            }
        }
        path.unwrap_or_else(|| panic!("the dashboard has no {kind} panel"))
    };
    match path {
        (i, None) => &mut dashboard["panels"][i],
        (i, Some(j)) => &mut dashboard["panels"][i]["panels"][j],
    }
}
