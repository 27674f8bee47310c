#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let body = std::fs::read("/tmp/vt/body.xml").unwrap();
    let limits = vws::soap::xml::Limits::default();
    let n = 200_000;
    let t = std::time::Instant::now();
    let mut k = 0;
    for _ in 0..n {
        let env = vws::soap::envelope::parse(&body, &limits).unwrap();
        k += env.payload().name.local.len();
    }
    let el = t.elapsed();
    println!("parse: {:.2} us/op ({k})", el.as_secs_f64() * 1e6 / n as f64);
    let a = vws::soap::envelope::Addressing {
        message_id: Some("uuid:x".into()),
        to: Some("http://h/s".into()),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    for _ in 0..n {
        let r = vws::soap::envelope::response(&a, "http://h/s", "urn:act", "<p>x</p>");
        k += r.len();
    }
    println!("response: {:.2} us/op ({k})", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
