//! Role manifests: `roles/<name>/role.yaml` (data) and `roles/<name>/defaults.yaml`.
