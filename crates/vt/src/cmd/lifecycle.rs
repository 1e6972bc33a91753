//! `vt start|shutdown|stop|pause|resume|reboot|repair|undefine NAME`.

use api::manager::VmStatus;

use super::client::{CliResult, Client};
use super::output::{print_json, Format};

/// `POST /vms/NAME/ACTION` (`query` after a `?`), then one line saying
/// what the VM is now.
pub fn action(c: &Client, name: &str, action: &str, query: &str, format: Format) -> CliResult {
    let path = format!("/vms/{name}/{action}{query}");
    let vm: VmStatus = c.json("POST", &path, None)?;
    match format {
        Format::Json => print_json(&vm),
        Format::Table => match &vm.reason {
            Some(r) if !vm.state.is_active() && r != vm.state.as_str() => {
                println!("{name}: {} ({r})", vm.state.as_str())
            }
            _ => println!("{name}: {}", vm.state.as_str()),
        },
    }
    Ok(())
}

pub fn undefine(c: &Client, name: &str, format: Format) -> CliResult {
    c.call("DELETE", &format!("/vms/{name}"), None)?;
    match format {
        Format::Json => print_json(&serde_json::json!({ "name": name, "undefined": true })),
        Format::Table => println!("{name}: undefined (disk images kept)"),
    }
    Ok(())
}
