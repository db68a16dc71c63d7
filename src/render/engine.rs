//! The template engine: minijinja with strict undefined, Python-compatible methods, Ansible-like
//! whitespace, and the lookup order **override directory → built in**. Roles and templates are
//! embedded in the binary, so pgstrap needs no files beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use include_dir::{include_dir, Dir};
use minijinja::{Environment, UndefinedBehavior, Value};

use crate::error::{Error, Result};
use crate::inventory::secrets::Masker;

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// Template names starting with this are snippets: the rest of the name is the template.
const SNIPPET: &str = "snippet:";

/// Where a template came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateOrigin {
    Override(PathBuf),
    BuiltIn,
}

impl std::fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateOrigin::Override(path) => write!(f, "override {}", path.display()),
            TemplateOrigin::BuiltIn => f.write_str("built in"),
        }
    }
}

/// Find a template: the override directory first, then the embedded copy.
pub fn find_template(overrides: &Path, name: &str) -> Option<(String, TemplateOrigin)> {
    // A template name is a relative path below the template directories: never an absolute
    // path or `..` (`templates show /etc/hostname`, `{% include '/etc/hostname' %}`).
    let relative = !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !relative {
        return None;
    }
    let path = overrides.join(name);
    if let Ok(text) = crate::inventory::read_user_file(&path) {
        return Some((text, TemplateOrigin::Override(path)));
    }
    TEMPLATES
        .get_file(name)
        .and_then(|f| f.contents_utf8())
        .map(|text| (text.to_owned(), TemplateOrigin::BuiltIn))
}

/// Every built-in template name (`<role>/<file>.j2`).
pub fn builtin_templates() -> Vec<String> {
    let mut names = Vec::new();
    collect(&TEMPLATES, &mut names);
    names.retain(|n| n.ends_with(".j2"));
    names.sort();
    names
}

fn collect(dir: &Dir<'static>, out: &mut Vec<String>) {
    for file in dir.files() {
        out.push(file.path().to_string_lossy().into_owned());
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

/// The engine with every template reachable by name, recording where each came from.
pub struct Engine {
    pub env: Environment<'static>,
    origins: Arc<Mutex<BTreeMap<String, TemplateOrigin>>>,
    /// Hides secret values in error messages (a template or an expression may name a secret).
    masker: Masker,
}

impl Engine {
    pub fn new(overrides: &Path) -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .expect("static syntax config is valid"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Config files are not HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let origins: Arc<Mutex<BTreeMap<String, TemplateOrigin>>> = Arc::default();
        let loader_origins = origins.clone();
        let overrides = overrides.to_path_buf();
        env.set_loader(move |name| {
            // A string of a role manifest: the name is the template (compiled once, cached).
            if let Some(source) = name.strip_prefix(SNIPPET) {
                return Ok(Some(source.to_owned()));
            }
            Ok(find_template(&overrides, name).map(|(text, origin)| {
                if let Ok(mut map) = loader_origins.lock() {
                    map.insert(name.to_owned(), origin);
                }
                text
            }))
        });
        let header_origins = origins.clone();
        env.add_function(
            "header",
            move |state: &minijinja::State, prefix: Option<String>| -> String {
                let prefix = prefix.unwrap_or_else(|| "#".into());
                let name = state.name().to_owned();
                let origin = header_origins
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&name).cloned())
                    .unwrap_or(TemplateOrigin::BuiltIn);
                header_text(&prefix, &name, &origin)
            },
        );
        Self {
            env,
            origins,
            masker: Masker::default(),
        }
    }

    /// Mask these secrets in every error this engine reports.
    pub fn with_masker(mut self, masker: Masker) -> Self {
        self.masker = masker;
        self
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    pub fn origin(&self, name: &str) -> TemplateOrigin {
        self.origins
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
            .unwrap_or(TemplateOrigin::BuiltIn)
    }

    /// Render a named template; errors name the template and line.
    pub fn render(&self, name: &str, context: &Value) -> Result<String> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| template_error(e).masked(&self.masker))?;
        template
            .render(context)
            .map_err(|e| template_error(e).masked(&self.masker))
    }

    /// Render a short template given as text (a string of a role manifest); compiled once per
    /// distinct text.
    pub fn render_snippet(
        &self,
        source: &str,
        context: &Value,
    ) -> std::result::Result<String, minijinja::Error> {
        self.env
            .get_template(&format!("{SNIPPET}{source}"))?
            .render(context)
    }

    /// Evaluate a Jinja expression (a `when:`) to true or false.
    pub fn truthy(&self, expression: &str, context: &Value, whose: &str) -> Result<bool> {
        let compiled = self.env.compile_expression(expression).map_err(|e| {
            Error::usage(
                format!("{whose}: cannot parse `when: {expression}`: {e}"),
                Some("`when` is a Jinja expression, e.g. `cluster.vip` or `'postgres' in host.groups`".into()),
            )
            .masked(&self.masker)
        })?;
        let value = compiled.eval(context).map_err(|e| {
            Error::usage(
                format!("{whose}: `when: {expression}`: {e}"),
                Some("templates/README.md lists what an expression can use".into()),
            )
            .masked(&self.masker)
        })?;
        Ok(value.is_true())
    }
}

/// The comment block every generated file starts with.
pub fn header_text(prefix: &str, name: &str, origin: &TemplateOrigin) -> String {
    let source = match origin {
        // Escaped: a path is the user's, and a newline in it would end the comment.
        TemplateOrigin::Override(path) => format!(
            "your override {}",
            path.display().to_string().escape_debug()
        ),
        TemplateOrigin::BuiltIn => format!("the built-in template {name}"),
    };
    format!(
        "{prefix} Generated by pgstrap from {source}. Do not edit on the host: pgstrap\n\
         {prefix} overwrites it. Change settings in the inventory (`pgstrap vars HOST -i INV`), or\n\
         {prefix} override the template with templates/{name} next to the inventory."
    )
}

/// A template problem: the user's override or a setting is wrong (bad input).
pub fn template_error(error: minijinja::Error) -> Error {
    let place = match (error.name(), error.line()) {
        (Some(name), Some(line)) => format!("template {name} line {line}"),
        (Some(name), None) => format!("template {name}"),
        _ => "template".to_owned(),
    };
    let detail = error
        .detail()
        .map(str::to_owned)
        .unwrap_or_else(|| error.kind().to_string());
    Error::usage(
        format!("{place}: {detail}"),
        Some("templates/README.md lists every variable a template can use; `pgstrap vars HOST -i INV` shows the settings".into()),
    )
}
