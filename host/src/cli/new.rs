//! `wasmq new`: creates a project folder for a consumer or producer component in Rust, Python or
//! JavaScript, ready to build (`wasmq run` runs its `build` command), run and test, so that a
//! first component takes one command instead of a page of setup.
//!
//! The files come from the templates embedded in the binary by `build.rs` (`templates/KIND-LANG/`
//! of the repository, plus its `wit/` and, for JavaScript, the npm lock file of
//! `guest-examples/js`), so an installed binary needs no checkout and a project always gets
//! the contract the binary was built with. `{{name}}` in a template's paths and text becomes
//! the project's name, `{{crate}}` the name with `_` for `-` (the file name of a Rust
//! component).
//!
//! Nothing is ever overwritten: the folder must be new or empty, and every file is created
//! with `create_new`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// The `name` of `guest-examples/js/package.json`, replaced in the lock file of a new project.
const NPM_LOCK_NAME: &str = "\"name\": \"wasmq-js-guests\"";

/// Longest project name.
const MAX_NAME_LEN: usize = 64;

/// `wasmq new consumer|producer NAME --lang rust|python|js [--dir PATH]`.
#[derive(Debug, Args)]
pub(super) struct NewCommand {
    /// What to create.
    kind: Kind,
    /// The project's name: lowercase letters, digits and `-`, starting with a letter.
    name: String,
    /// The language of the component.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The folder to create (default: NAME in the current folder). It must not exist yet, or
    /// be empty.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

/// What the project's component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Handles the messages of a queue (WIT world `consumer`).
    Consumer,
    /// Answers HTTP requests on a route and sends messages to a queue (WIT world
    /// `http-producer`).
    Producer,
}

/// The language of the project's component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    /// Rust, built with cargo and wit-bindgen.
    Rust,
    /// Python, built with componentize-py.
    #[value(alias = "py")]
    Python,
    /// JavaScript, built with componentize-js (from npm).
    #[value(alias = "javascript")]
    Js,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Consumer => "consumer",
            Self::Producer => "producer",
        })
    }
}

impl Lang {
    /// The suffix of its template folders (`consumer-js`).
    fn folder(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Js => "js",
        }
    }

    /// Its name for people.
    fn title(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::Python => "Python",
            Self::Js => "JavaScript",
        }
    }
}

impl NewCommand {
    /// Creates the project and prints what to do next.
    pub(super) async fn run(self) -> Result<()> {
        check_name(&self.name)?;
        let dir = self.dir.unwrap_or_else(|| PathBuf::from(&self.name));
        let files = render(self.kind, self.lang, &self.name);
        write_project(&dir, &files)?;
        print!("{}", next_steps(self.kind, self.lang, &self.name, &dir));
        Ok(())
    }
}

/// Refuses a name that is not lowercase letters, digits and `-`, starting with a letter and
/// not ending with `-`: it names the folder, the component, a Rust crate and an npm package.
fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!(
            "`{name}` is not a project name: use lowercase letters, digits and `-` (at most \
             {MAX_NAME_LEN}), starting with a letter and not ending with `-`, e.g. `my-consumer`"
        );
    }
    Ok(())
}

/// The JSON Schema of the manifest, written beside it (`wasmq schema` prints the same).
const SCHEMA_FILE: &str = "wasmq.schema.json";

/// The files of a new project: relative path (with `/`) and contents, in path order.
fn render(kind: Kind, lang: Lang, name: &str) -> Vec<(String, Vec<u8>)> {
    let prefix = format!("{kind}-{}/", lang.folder());
    let mut files: Vec<(String, Vec<u8>)> = TEMPLATE_FILES
        .iter()
        .filter_map(|(path, text)| {
            let path = path.strip_prefix(&prefix)?;
            Some((substitute(path, name), substitute(text, name).into_bytes()))
        })
        .chain(
            WIT_FILES
                .iter()
                .map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec())),
        )
        .collect();
    if lang == Lang::Js {
        let lock = NPM_LOCK.replace(NPM_LOCK_NAME, &format!("\"name\": \"{name}\""));
        files.push(("package-lock.json".to_owned(), lock.into_bytes()));
    }
    // The manifest's `#:schema` line points editors at this file.
    let schema =
        serde_json::to_string_pretty(&crate::manifest::json_schema()).unwrap_or_default() + "\n";
    files.push((SCHEMA_FILE.to_owned(), schema.into_bytes()));
    files.sort();
    files
}

/// `text` with the placeholders replaced.
fn substitute(text: &str, name: &str) -> String {
    text.replace("{{name}}", name)
        .replace("{{crate}}", &name.replace('-', "_"))
}

/// Writes `files` into `dir`, which must not exist or be empty. When writing fails in a
/// folder this call created, the folder is removed again.
fn write_project(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let created = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty; choose another NAME or --dir (nothing was written)",
                    dir.display()
                );
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            true
        }
        Err(e) if dir.exists() => {
            bail!("{} exists and is not a folder ({e})", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let written = files
        .iter()
        .try_for_each(|(path, contents)| write_new(&dir.join(path), contents));
    if written.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

/// Creates `path` (and its folders) with `contents`; fails if it exists.
fn write_new(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut file| file.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}

/// What `wasmq new` prints: what it created, then the commands to build, run, try and test it.
fn next_steps(kind: Kind, lang: Lang, name: &str, dir: &Path) -> String {
    let mut steps = vec![(format!("cd {}", dir.display()), String::new())];
    if lang == Lang::Python {
        steps.push((
            "pip install -r requirements.txt".to_owned(),
            "componentize-py, once".to_owned(),
        ));
    }
    match kind {
        Kind::Consumer => steps.extend([
            (
                "wasmq run".to_owned(),
                "builds it, then consumes queue `jobs` (Ctrl-C stops)".to_owned(),
            ),
            (
                "wasmq send jobs hello".to_owned(),
                "in another terminal; the host logs the message".to_owned(),
            ),
            (
                "wasmq test".to_owned(),
                "runs fixtures/ against the built component".to_owned(),
            ),
        ]),
        Kind::Producer => steps.extend([
            (
                "wasmq run".to_owned(),
                format!("builds it, then serves POST /{name} (Ctrl-C stops)"),
            ),
            (
                format!("curl -d hello localhost:8787/{name}"),
                "in another terminal; queues `hello` in `jobs`".to_owned(),
            ),
            (
                "wasmq messages peek jobs".to_owned(),
                "shows the queued message".to_owned(),
            ),
        ]),
    }
    let width = steps
        .iter()
        .map(|(command, _)| command.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "created {}: a {kind} in {} (README.md says more)\n\n",
        dir.display(),
        lang.title()
    );
    for (command, comment) in steps {
        if comment.is_empty() {
            out.push_str(&format!("  {command}\n"));
        } else {
            out.push_str(&format!("  {command:width$}  # {comment}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 2] = [Kind::Consumer, Kind::Producer];
    const LANGS: [Lang; 3] = [Lang::Rust, Lang::Python, Lang::Js];

    /// A file of the repository.
    fn repo_file(path: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn file<'a>(files: &'a [(String, Vec<u8>)], path: &str) -> &'a str {
        let (_, contents) = files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no {path}"));
        std::str::from_utf8(contents).unwrap()
    }

    #[test]
    fn names_are_lowercase_letters_digits_and_dashes() {
        for good in ["a", "my-consumer", "orders2", "x-1-y"] {
            check_name(good).unwrap();
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            "My",
            "my_consumer",
            "1st",
            "-a",
            "a-",
            "a b",
            "a/b",
            "..",
            "é",
            &long,
        ] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("is not a project name"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn templates_use_only_known_placeholders() {
        for (path, text) in TEMPLATE_FILES {
            for piece in [*path, *text] {
                let mut rest = piece;
                while let Some(start) = rest.find("{{") {
                    let after = &rest[start + 2..];
                    let word: String = after
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if after[word.len()..].starts_with("}}") {
                        assert!(
                            ["name", "crate"].contains(&word.as_str()),
                            "{path}: unknown placeholder {{{{{word}}}}}"
                        );
                    }
                    rest = after;
                }
            }
        }
    }

    #[test]
    fn every_project_has_its_sources_the_repository_wit_a_manifest_and_a_readme() {
        let wit = repo_file("wit/queues.wit");
        for kind in KINDS {
            for lang in LANGS {
                let files = render(kind, lang, "my-thing");
                let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
                let source = match lang {
                    Lang::Rust => "src/lib.rs",
                    Lang::Python => "app.py",
                    Lang::Js if kind == Kind::Consumer => "consumer.js",
                    Lang::Js => "producer.js",
                };
                for expected in [source, "manifest.toml", "README.md", ".gitignore"] {
                    assert!(paths.contains(&expected), "{kind}-{lang:?}: {paths:?}");
                }
                assert_eq!(file(&files, "wit/queues.wit"), wit, "{kind}-{lang:?}");
                assert_eq!(
                    paths.iter().filter(|p| p.starts_with("wit/")).count(),
                    WIT_FILES.len()
                );
                let fixture = paths.contains(&"fixtures/my-thing.toml");
                assert_eq!(fixture, kind == Kind::Consumer, "{kind}-{lang:?}");
                for (path, contents) in &files {
                    let text = String::from_utf8_lossy(contents);
                    assert!(
                        !text.contains("{{name}}") && !text.contains("{{crate}}"),
                        "{path}"
                    );
                }
                let readme = file(&files, "README.md");
                assert!(readme.starts_with("# my-thing\n"), "{readme}");
            }
        }
        let rust = render(Kind::Consumer, Lang::Rust, "my-thing");
        assert!(file(&rust, "Cargo.toml").contains("name = \"my-thing\""));
        assert!(file(&rust, "manifest.toml").contains("release/my_thing.wasm"));
    }

    #[test]
    fn manifests_load_with_a_build_command_and_the_component_named_after_the_project() {
        for kind in KINDS {
            for lang in LANGS {
                let dir = tempfile::tempdir().unwrap();
                let project = dir.path().join("p");
                write_project(&project, &render(kind, lang, "my-thing")).unwrap();
                let manifest = crate::manifest::load(&project.join("manifest.toml"))
                    .unwrap_or_else(|e| panic!("{kind}-{lang:?}: {e}"));
                let component = &manifest.components["my-thing"];
                assert!(component.build.is_some(), "{kind}-{lang:?}");
                assert!(component.source.starts_with(&project));
                assert_eq!(
                    manifest.queues.contains_key("jobs-dlq"),
                    kind == Kind::Consumer
                );
            }
        }
    }

    #[test]
    fn tool_versions_are_those_of_the_examples() {
        // Rust: wit-bindgen exactly as locked for guest-examples/.
        let lock = repo_file("guest-examples/Cargo.lock");
        let cargo = render(Kind::Consumer, Lang::Rust, "x");
        let pinned = file(&cargo, "Cargo.toml")
            .split("wit-bindgen = { version = \"=")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        assert!(
            lock.contains(&format!("name = \"wit-bindgen\"\nversion = \"{pinned}\"\n")),
            "wit-bindgen {pinned} is not in guest-examples/Cargo.lock"
        );
        // Python: componentize-py as scripts/build-polyglot-guests.sh installs it.
        let script = repo_file("scripts/build-polyglot-guests.sh");
        let version = script
            .lines()
            .find_map(|line| line.strip_prefix("componentize_py_version="))
            .unwrap();
        for kind in KINDS {
            let files = render(kind, Lang::Python, "x");
            assert!(
                file(&files, "requirements.txt")
                    .contains(&format!("\ncomponentize-py=={version}\n")),
                "{kind}"
            );
        }
        // JavaScript: guest-examples/js's packages, and its lock under the project's name.
        let examples: serde_json::Value =
            serde_json::from_str(&repo_file("guest-examples/js/package.json")).unwrap();
        for kind in KINDS {
            let files = render(kind, Lang::Js, "my-thing");
            let package: serde_json::Value =
                serde_json::from_str(file(&files, "package.json")).unwrap();
            assert_eq!(
                package["devDependencies"], examples["devDependencies"],
                "{kind}"
            );
            assert_eq!(package["name"], "my-thing");
            let lock: serde_json::Value =
                serde_json::from_str(file(&files, "package-lock.json")).unwrap();
            assert_eq!(lock["name"], "my-thing");
            assert_eq!(lock["packages"][""]["name"], "my-thing");
            assert_eq!(
                lock["packages"][""]["devDependencies"],
                examples["devDependencies"]
            );
        }
    }

    #[test]
    fn an_existing_folder_is_filled_only_when_empty_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            ("a.txt".to_owned(), b"new".to_vec()),
            ("sub/b.txt".to_owned(), b"new".to_vec()),
        ];

        // An empty folder is filled.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_project(&empty, &files).unwrap();
        assert_eq!(std::fs::read(empty.join("sub/b.txt")).unwrap(), b"new");

        // A folder with anything in it is refused, untouched.
        let full = dir.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("a.txt"), "mine").unwrap();
        let error = write_project(&full, &files).unwrap_err().to_string();
        assert!(error.contains("exists and is not empty"), "{error}");
        assert_eq!(std::fs::read_to_string(full.join("a.txt")).unwrap(), "mine");
        assert!(!full.join("sub").exists());

        // So is a file.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "mine").unwrap();
        let error = write_project(&plain, &files).unwrap_err().to_string();
        assert!(error.contains("is not a folder"), "{error}");

        // A file that appears meanwhile is not overwritten, and the new folder goes again.
        let racing = dir.path().join("racing");
        let twice = vec![files[0].clone(), files[0].clone()];
        let error = format!("{:#}", write_project(&racing, &twice).unwrap_err());
        assert!(error.contains("writing"), "{error}");
        assert!(!racing.exists());
    }

    #[test]
    fn next_steps_name_the_folder_and_the_commands() {
        let text = next_steps(
            Kind::Producer,
            Lang::Python,
            "hooks",
            Path::new("work/hooks"),
        );
        assert!(
            text.starts_with("created work/hooks: a producer in Python"),
            "{text}"
        );
        for line in [
            "  cd work/hooks\n",
            "  pip install -r requirements.txt",
            "curl -d hello localhost:8787/hooks",
        ] {
            assert!(text.contains(line), "{text}");
        }
        let text = next_steps(Kind::Consumer, Lang::Rust, "c", Path::new("c"));
        assert!(text.contains("  wasmq send jobs hello  "), "{text}");
        assert!(!text.contains("pip"), "{text}");
    }
}
