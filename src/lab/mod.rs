//! `pgstrap lab`: real systemd hosts on this machine (systemd-nspawn containers, each with its own
//! network namespace and sshd), for trying pgstrap without servers and for end-to-end tests.
