//! `wasmq schema`: the JSON Schema the binary prints accepts every manifest the project ships
//! (which the host also accepts) and refuses the mistakes an editor should flag.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The schema, as `wasmq schema` prints it.
fn schema() -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A TOML document as the JSON value a schema validator checks.
fn as_json(text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

/// The manifests the project ships: the example and every template's.
fn shipped_manifests() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut templates: Vec<PathBuf> = std::fs::read_dir(root.join("templates"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("manifest.toml"))
        .filter(|path| path.is_file())
        .collect();
    templates.sort();
    assert!(
        !templates.is_empty(),
        "no template manifest found under {}",
        root.join("templates").display()
    );
    let mut found = vec![root.join("examples/manifest.toml")];
    found.extend(templates);
    found
}

#[test]
fn the_schema_accepts_every_shipped_manifest() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for path in shipped_manifests() {
        // Templates name their component `{{name}}` until `wasmq new` fills it in.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("{{name}}", "example")
            .replace("{{crate}}", "example");
        if path
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            == Some("templates".as_ref())
        {
            assert!(
                text.starts_with("#:schema ./wasmq.schema.json\n"),
                "{}: a template's manifest points editors at its schema",
                path.display()
            );
        }
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&text))
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        // The host reads the same file without a complaint about its shape.
        if let Err(errors) = wasmq_host::manifest::parse(&text, &path) {
            for error in errors.iter() {
                assert!(
                    !error.message.contains("unknown field")
                        && !error.message.contains("invalid type"),
                    "{}: the schema accepts what the host refuses: {error}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_schema_refuses_what_an_editor_should_flag() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let wrong = [
        // A misspelt key.
        "[queues.jobs]\ndelivery_dealy = 5\n",
        // A number as text.
        "[components.w]\nsource = \"w.wasm\"\nconsumer = { queue = \"jobs\", max_batch_size = \"ten\" }\n",
        // A table the manifest does not have.
        "[consumers.w]\nqueue = \"jobs\"\n",
        // A component without its source.
        "[components.w]\nroute = \"/hook\"\n",
        // A limit under an unknown name.
        "[components.w]\nsource = \"w.wasm\"\nroute = \"/h\"\nlimits = { fuel = 10 }\n",
    ];
    for text in wrong {
        assert!(
            !validator.is_valid(&as_json(text)),
            "the schema accepts:\n{text}"
        );
    }
    let right = "[queues.jobs]\ndelivery_delay = 5\n[components.w]\nsource = \"w.wasm\"\n\
                 consumer = { queue = \"jobs\", max_batch_size = 10 }\nlimits = { memory = \"64MiB\" }\n";
    assert!(validator.is_valid(&as_json(right)));
}
