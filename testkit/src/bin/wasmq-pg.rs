//! A throwaway PostgreSQL server for trying the shared backend by hand, started exactly as the
//! tests start theirs ([`wasmq_testkit::postgres::PgCluster`]): prints its URL, serves until
//! Ctrl-C (or until this process ends any other way), then stops it and deletes its data.
//! Never for production: it trusts every local connection and runs with `fsync` off.
//!
//! ```sh
//! cargo run -p wasmq-testkit --bin wasmq-pg
//! ```

use std::io::Read;

use wasmq_testkit::postgres::PgCluster;

fn main() {
    let cluster = match PgCluster::start() {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    };
    println!("{}", cluster.url());
    eprintln!("PostgreSQL is running; press Ctrl-D (or Ctrl-C) to stop it and delete its data");
    // Ctrl-D ends standard input; Ctrl-C ends the process, and the cluster's watchdog stops
    // the server once it is gone.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(cluster);
}
