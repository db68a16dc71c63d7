//! Template rendering and the desired state of every host.
