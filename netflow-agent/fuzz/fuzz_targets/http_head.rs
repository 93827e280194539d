#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = netflow_agent::fuzzing::target("http_head").expect("a fuzzing entry");
    (target.run)(data);
});
