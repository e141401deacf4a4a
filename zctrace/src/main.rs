mod probe;
fn main() -> anyhow::Result<()> {
    let mut p = probe::Probes::load(probe::ProbeOptions::default())?;
    for h in p.hooks() {
        println!("{:24} {} {:?}", h.name, h.attached, h.reason);
    }
    p.trace_pid(std::process::id())?;
    let data = std::fs::read("/etc/services")?;
    println!("read {}", data.len());
    let s = p.snapshot()?;
    for (k, v) in &s.rows {
        println!("{k:?} {:?}", &v.v[..12]);
    }
    println!("{:?}", p.stats()?);
    Ok(())
}
