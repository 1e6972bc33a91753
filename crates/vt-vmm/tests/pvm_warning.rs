//! On a PVM host (this one), starting a Linux kernel warns that it will
//! not boot; a tiny guest gets no warning.

use std::process::{Command, Stdio};

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vt-vmm"))
}

#[test]
fn a_linux_kernel_on_pvm_is_warned_about() {
    let dir = std::env::temp_dir().join(format!("vt-pvmwarn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A bzImage's header (too old a boot protocol to load: the run ends
    // right after the warning).
    let mut bz = vec![0u8; 0x1000];
    bz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let linux = dir.join("bzImage");
    std::fs::write(&linux, &bz).unwrap();
    let tiny = dir.join("tiny");
    std::fs::write(&tiny, tinyguest::elf("hi\n", true)).unwrap();
    let run = |k: &std::path::Path| {
        let o = vmm()
            .arg("--kernel")
            .arg(k)
            .args(["--memory", "16"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let pvm = pvm::host_is_pvm();
    let e = run(&linux);
    assert_eq!(
        e.contains("warning: this host's /dev/kvm is PVM"),
        pvm,
        "{e}"
    );
    let e = run(&tiny);
    assert!(!e.contains("PVM"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
