//! `auditd verify`: the stored records and batches against what the writer committed
//! (`audit_layer::integrity::verify`), with an exit status a script can act on.

use std::process::ExitCode;

use super::cli::DatabaseArgs;
use super::schema;

/// Checks the database and prints the report: exit 0 intact, 1 not, 2 not checked.
pub async fn run(database: &DatabaseArgs) -> ExitCode {
    let client = match schema::connect(&database.database_url, database.db_timeout).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("auditd verify: could not check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = match audit_layer::integrity::verify(&client).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("auditd verify: could not check: {e}");
            return ExitCode::from(2);
        }
    };
    for finding in &report.findings {
        println!("{finding}");
    }
    println!(
        "{}: {} records proven in {} batches; {} finding(s); {} record(s) written without integrity",
        if report.intact() { "intact" } else { "NOT INTACT" },
        report.proven,
        report.batches,
        report.findings.len(),
        report.unproven
    );
    if report.intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
