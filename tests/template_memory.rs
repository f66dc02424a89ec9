//! Templates that try to make a render allocate without bound (repetition, join, concatenation,
//! filters that build values) are stopped with a diagnostic naming the template and line, and
//! the peak memory of the render stays small. The allocator of this test binary counts live
//! bytes and aborts the process past 1 GiB, so a bomb that gets through fails the test instead of
//! taking the machine's memory.

use opamp_gitops::repo::{compile, CompileOptions, Snapshot};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
const ABORT_ABOVE: usize = 1 << 30;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        if live > ABORT_ABOVE {
            // Printing allocates; write the reason with a raw write and stop.
            let msg = b"template_memory: more than 1 GiB live: a render is unbounded\n";
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::abort();
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FLEET: &str = "rules:\n  - name: all\n    match: {}\n    template: bomb.yaml.j2\n";

const AGENT: &str = "attributes: { environment: production }\n";

/// Compiles a repository whose only template is `template` (its first line a harmless comment,
/// so the bomb sits on line 2) and returns the error diagnostics as text and the render's peak.
fn compile_bomb(template: &str) -> (Vec<String>, usize) {
    // One render at a time: the peak is process-wide.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut snapshot = Snapshot::new();
    snapshot.insert("fleet.yaml", FLEET);
    snapshot.insert("agents/a.yaml", AGENT);
    snapshot.insert(
        "templates/bomb.yaml.j2",
        format!("# bomb\n{template}\nreceivers: {{}}\n"),
    );
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let output = compile(&snapshot, "r1", &CompileOptions::default());
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        output.revision.is_none(),
        "a bomb must not compile: {template}"
    );
    let errors = output.errors().map(|d| d.human()).collect();
    (errors, peak)
}

/// Each bomb is refused in the template, on its line, having allocated at most this much.
const PEAK_LIMIT: usize = 256 << 20;

#[track_caller]
fn assert_stopped(template: &str) {
    let (errors, peak) = compile_bomb(template);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("templates/bomb.yaml.j2:2")),
        "the error names the template and line 2 for {template}: {errors:#?}"
    );
    assert!(
        peak < PEAK_LIMIT,
        "{template}: the render took {} MiB",
        peak >> 20
    );
}

/// One test per bomb, so that a failure names it.
macro_rules! bombs {
    ($($name:ident: $template:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_stopped($template);
            }
        )*
    };
}

bombs! {
    the_reported_join_bomb: r#"{% set a = "x" * 100000 %}{% set b = ([a] * 100000) | join("") %}"#;
    join_with_a_joiner: r#"{% set a = "x" * 100000 %}{% set b = ([a] * 100000) | join(",") %}"#;
    join_of_an_attribute: r#"{% set a = {"k": "x" * 100000} %}{% set b = ([a] * 100000) | join(attribute="k") %}"#;
    string_of_a_repeated_list: r#"{% set a = "x" * 100000 %}{% set b = ([a] * 100000) | string %}"#;
    concatenation_with_a_repeated_list: r#"{% set a = "x" * 100000 %}{% set b = "" ~ ([a] * 100000) %}"#;
    tojson_of_a_repeated_list: r#"{% set a = "x" * 100000 %}{% set b = ([a] * 100000) | tojson %}"#;
    pprint_of_a_repeated_list: r#"{% set a = "x" * 100000 %}{% set b = ([a] * 100000) | pprint %}"#;
    yaml_of_a_repeated_list: r#"{% set a = "x" * 100000 %}{% set b = ([a] * 100000) | yaml %}"#;
    output_of_a_repeated_list: r#"{% set a = "x" * 100000 %}{% set b %}{{ [a] * 100000 }}{% endset %}"#;
    center: r#"{% set b = "x" | center(1000000000) %}"#;
    indent: r#"{% set a = "x\n" * 100000 %}{% set b = a | indent(100000) %}"#;
    replace: r#"{% set a = "x" * 100000 %}{% set b = a | replace("x", a) %}"#;
    format_width: r#"{% set b = "%1000000000s" | format("x") %}"#;
    nested_joins: r#"{% set a = "x" * 100000 %}{% set b = ([[a] * 1000] * 1000) | map("join") | join %}"#;
    materialized_list: r#"{% set b = ((["x"] * 100000) * 100000) | list | length %}"#;
    doubling_in_a_loop: r#"{% set ns = namespace(s="x" * 100000) %}{% for i in range(100000) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"#;
    repeated_dict_items: r#"{% set a = "x" * 100000 %}{% set b = dict(k=[a] * 100000) | tojson %}"#;
    sum_of_strings: r#"{% set a = ["x" * 100000] * 100000 %}{% set b = a | sum(start="") %}"#;
}
