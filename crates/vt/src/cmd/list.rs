//! `vt list` and `vt info NAME`.

use api::manager::VmStatus;

use super::client::{CliResult, Client};
use super::output::{print_json, table, vm_details, Format};

pub fn list(c: &Client, format: Format) -> CliResult {
    let vms: Vec<VmStatus> = c.json("GET", "/vms", None)?;
    if format == Format::Json {
        print_json(&vms);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.state.as_str().to_string(),
                v.definition.vcpus.to_string(),
                format!("{} MiB", v.definition.memory_mib),
                v.pid.map_or("-".into(), |p| p.to_string()),
                v.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["NAME", "STATE", "VCPUS", "MEMORY", "PID", "LAST EXIT"],
        &rows,
    );
    Ok(())
}

pub fn info(c: &Client, name: &str, format: Format) -> CliResult {
    let vm: VmStatus = c.json("GET", &format!("/vms/{name}"), None)?;
    match format {
        Format::Json => print_json(&vm),
        Format::Table => vm_details(&vm),
    }
    Ok(())
}
