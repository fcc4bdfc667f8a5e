//! `domalloc report --prof FILE...`: heap profiles (`DOMALLOC_PROF=1`) symbolised, merged over
//! ranks, tabled and drawn.
//!
//! A profile holds raw return addresses and the process's module map (`# map start-end offset
//! path` lines), so symbolisation happens here, after the run: each address is turned into an
//! address of its module's file (through the file's program headers: the mapping's file offset
//! lies in one `PT_LOAD` segment), and looked up with the `addr2line` crate (DWARF lines and
//! inlined frames when the module has debug information, else its symbol table). Call sites of
//! all the files are merged by their symbolised stacks (processes of one program map their
//! modules at different addresses). Output: the top call sites by live bytes at the peak, live
//! bytes at the end and allocated bytes, each with the share of its freed bytes that were freed
//! on another node than the allocating CPU's; `--svg` a flame graph of one view (the `inferno`
//! crate); `--collapsed` that view's symbolised collapsed stacks.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::ReportArgs;
use crate::{human_bytes, Failure};

/// One executable mapping of the profiled process.
#[derive(Debug, Clone)]
pub struct Map {
    /// Mapped addresses.
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// The module's file.
    pub path: String,
}

/// One call site of a profile file (bytes are the sampler's estimates).
#[derive(Debug, Clone, Default)]
pub struct RawSite {
    /// Samples taken.
    pub samples: u64,
    /// Bytes allocated.
    pub alloc: u64,
    /// Bytes live at the dump.
    pub live: u64,
    /// Bytes live when the sampled live bytes were at their peak.
    pub peak: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Of `freed`, freed on another node than the allocating CPU's.
    pub remote: u64,
    /// Mean lifetime of the freed samples (ms).
    pub lifetime_ms: u64,
    /// Sum of the sampled blocks' sizes.
    pub sizes: u64,
    /// Return addresses, outermost first.
    pub frames: Vec<u64>,
}

/// One profile file.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The file.
    pub file: PathBuf,
    /// `rank N` or `pid N`.
    pub label: String,
    /// Mean bytes between samples.
    pub sample_bytes: u64,
    /// Executable mappings.
    pub maps: Vec<Map>,
    /// Call sites.
    pub sites: Vec<RawSite>,
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Parses a profile; errors say what is wrong (the caller names the file).
pub fn parse(file: &Path, text: &str) -> Result<Profile, String> {
    let mut lines = text.lines();
    if lines.next() != Some("# domalloc heap profile 1") {
        return Err("not a domalloc heap profile (first line is not `# domalloc heap profile 1`)".into());
    }
    let mut p = Profile {
        file: file.to_path_buf(),
        label: String::new(),
        sample_bytes: 0,
        maps: Vec::new(),
        sites: Vec::new(),
    };
    for (n, l) in text.lines().enumerate().skip(1) {
        let bad = |what: &str| format!("line {}: {what}: {l}", n + 1);
        if let Some(rest) = l.strip_prefix("# pid ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |k: &str| f.iter().position(|w| *w == k).and_then(|i| f.get(i + 1)).copied();
            p.label = match get("rank") {
                Some(r) if r != "-" => format!("rank {r}"),
                _ => format!("pid {}", f.first().copied().unwrap_or("?")),
            };
            p.sample_bytes = get("sample_bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if let Some(rest) = l.strip_prefix("# map ") {
            let mut f = rest.splitn(3, ' ');
            let (range, off, path) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
            let (s, e) = range.split_once('-').ok_or_else(|| bad("a map line without a range"))?;
            p.maps.push(Map {
                start: hex(s).ok_or_else(|| bad("bad map start"))?,
                end: hex(e).ok_or_else(|| bad("bad map end"))?,
                offset: hex(off).ok_or_else(|| bad("bad map offset"))?,
                path: path.to_string(),
            });
        } else if let Some(rest) = l.strip_prefix("# site ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.first() == Some(&"samples") {
                continue; // the column header
            }
            if f.len() != 11 {
                return Err(bad("a site line without its 11 fields"));
            }
            let num = |i: usize| f[i].parse::<u64>().map_err(|_| bad("a site figure is not a number"));
            let frames = if f[10] == "[unknown]" {
                Vec::new()
            } else {
                f[10]
                    .split(';')
                    .map(|a| hex(a).ok_or_else(|| bad("a frame is not an address")))
                    .collect::<Result<_, _>>()?
            };
            p.sites.push(RawSite {
                samples: num(0)?,
                alloc: num(1)?,
                live: num(2)?,
                peak: num(3)?,
                freed: num(4)?,
                remote: num(5)?,
                lifetime_ms: num(6)?,
                sizes: num(8)? * num(0)?,
                frames,
            });
        }
    }
    if p.label.is_empty() {
        return Err("no `# pid` header line".into());
    }
    Ok(p)
}

/// One module opened for symbolisation: its loader, `PT_LOAD` segments (file offset, file
/// size, virtual address) and the sizes of its symbols by address (the largest where several
/// share one; 0: not known).
struct Module {
    loader: addr2line::Loader,
    segments: Vec<(u64, u64, u64)>,
    sizes: HashMap<u64, u64>,
}

/// Symbolises return addresses module by module, opening each file once.
#[derive(Default)]
pub struct Symbolizer {
    modules: HashMap<String, Option<Module>>,
    cache: HashMap<(String, u64), Vec<String>>,
}

impl Symbolizer {
    fn module(&mut self, path: &str) -> Option<&Module> {
        self.modules
            .entry(path.to_string())
            .or_insert_with(|| {
                let data = std::fs::read(path).ok()?;
                use object::{Object, ObjectSegment, ObjectSymbol};
                let file = object::File::parse(&*data).ok()?;
                let segments = file.segments().map(|s| (s.file_range().0, s.file_range().1, s.address())).collect();
                let mut sizes = HashMap::new();
                for sym in file.symbols().chain(file.dynamic_symbols()) {
                    let e = sizes.entry(sym.address()).or_insert(0);
                    *e = sym.size().max(*e);
                }
                Some(Module { loader: addr2line::Loader::new(path).ok()?, segments, sizes })
            })
            .as_ref()
    }

    /// The frames (outermost first: inlined callers before their callees) that return address
    /// `ra` of `profile` stands for; `module+0xoffset` when it cannot be symbolised.
    pub fn frames(&mut self, profile: &Profile, ra: u64) -> Vec<String> {
        let Some(m) = profile.maps.iter().find(|m| m.start <= ra && ra < m.end) else {
            return vec![format!("{ra:#x}")];
        };
        let file_off = ra - m.start + m.offset;
        let key = (m.path.clone(), file_off);
        if let Some(v) = self.cache.get(&key) {
            return v.clone();
        }
        let short =
            Path::new(&m.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| m.path.clone());
        let fallback = vec![format!("{short}+{file_off:#x}")];
        let names = self
            .module(&m.path)
            .and_then(|md| {
                let &(seg_off, _, seg_addr) =
                    md.segments.iter().find(|&&(o, sz, _)| o <= file_off && file_off < o + sz.max(1))?;
                // A return address follows its call: look up the call (one byte back).
                let probe = file_off - seg_off + seg_addr - 1;
                let mut out = Vec::new();
                if let Ok(mut it) = md.loader.find_frames(probe) {
                    while let Ok(Some(f)) = it.next() {
                        let name = f.function.as_ref().and_then(|n| n.demangle().ok().map(|d| d.into_owned()));
                        let loc = f.location.as_ref().and_then(|l| {
                            Some(format!("{}:{}", Path::new(l.file?).file_name()?.to_string_lossy(), l.line?))
                        });
                        match (name, loc) {
                            (Some(n), Some(l)) => out.push(format!("{} ({l})", clean(&n))),
                            (Some(n), None) => out.push(clean(&n)),
                            _ => {}
                        }
                    }
                }
                if out.is_empty() {
                    // The symbol before the address, unless the address lies past its end: a
                    // function the table does not list (stripped code; the loader's internals).
                    let sym = md.loader.find_symbol_info(probe)?;
                    let size = md.sizes.get(&sym.address()).copied().unwrap_or(0);
                    if size != 0 && probe >= sym.address() + size {
                        return None;
                    }
                    out.push(clean(&addr2line::demangle_auto(sym.name().into(), None)));
                }
                out.reverse(); // find_frames gives the innermost (inlined) frame first
                Some(out)
            })
            .unwrap_or(fallback);
        self.cache.insert(key, names.clone());
        names
    }
}

/// A function name as a flame graph frame: Rust's trailing hash dropped, `;` (the collapsed
/// format's separator) replaced.
fn clean(name: &str) -> String {
    let n = match name.rfind("::h") {
        Some(i) if name.len() - i == 19 && name[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &name[..i],
        _ => name,
    };
    n.replace(';', ":")
}

/// A call site merged over the files: its symbolised stack and summed figures.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// Frames, outermost first.
    pub stack: Vec<String>,
    /// Summed figures of the merged raw sites (`lifetime_ms` weighted by freed bytes).
    pub raw: RawSite,
    /// Files (ranks) the site appears in.
    pub ranks: usize,
}

impl Site {
    /// The innermost frame: the function that called the allocator.
    pub fn caller(&self) -> &str {
        self.stack.last().map(String::as_str).unwrap_or("[unknown]")
    }
    /// The share of the freed bytes that another node freed.
    pub fn remote_share(&self) -> Option<f64> {
        (self.raw.freed > 0).then(|| self.raw.remote as f64 / self.raw.freed as f64)
    }
}

/// Frames of the allocator itself (a profile of a program linked with it, built with frame
/// pointers, starts with them): dropped from the innermost end.
fn is_allocator_frame(f: &str) -> bool {
    [
        "domalloc::",
        "<domalloc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rdl_alloc",
        "__rdl_realloc",
        "__rg_alloc",
        "alloc::alloc::",
        "malloc ",
        "calloc ",
        "realloc ",
    ]
    .iter()
    .any(|p| f.starts_with(p))
        || f == "malloc"
        || f == "calloc"
        || f == "realloc"
}

/// Symbolises and merges every file's sites.
pub fn merge(profiles: &[Profile], sym: &mut Symbolizer) -> Vec<Site> {
    let mut by_stack: BTreeMap<Vec<String>, (Site, usize)> = BTreeMap::new();
    for (k, p) in profiles.iter().enumerate() {
        for s in &p.sites {
            let mut stack: Vec<String> = s.frames.iter().flat_map(|&ra| sym.frames(p, ra)).collect();
            while stack.last().is_some_and(|f| is_allocator_frame(f)) {
                stack.pop();
            }
            if stack.is_empty() {
                stack.push("[unknown]".into());
            }
            let e = by_stack.entry(stack.clone()).or_insert_with(|| (Site { stack, ..Default::default() }, usize::MAX));
            let r = &mut e.0.raw;
            r.lifetime_ms =
                (r.lifetime_ms * r.freed + s.lifetime_ms * s.freed).checked_div(r.freed + s.freed).unwrap_or(0);
            r.samples += s.samples;
            r.alloc += s.alloc;
            r.live += s.live;
            r.peak += s.peak;
            r.freed += s.freed;
            r.remote += s.remote;
            r.sizes += s.sizes;
            if e.1 != k {
                e.1 = k;
                e.0.ranks += 1;
            }
        }
    }
    by_stack.into_values().map(|(s, _)| s).collect()
}

/// Which figure a view shows.
pub fn view_value(view: &str, s: &RawSite) -> Option<u64> {
    Some(match view {
        "alloc" => s.alloc,
        "live" => s.live,
        "peak" => s.peak,
        "remote" => s.remote,
        _ => return None,
    })
}

/// The three top-N tables.
pub fn tables(sites: &[Site], profiles: &[Profile], top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "domalloc report --prof: {} profile(s) ({}), {} call site(s), sampling every {} on average",
        profiles.len(),
        profiles.iter().map(|p| p.label.as_str()).collect::<Vec<_>>().join(", "),
        sites.len(),
        human_bytes(profiles.first().map_or(0, |p| p.sample_bytes))
    );
    for (title, view) in [("live at the peak", "peak"), ("live at the end", "live"), ("allocated", "alloc")] {
        let mut v: Vec<&Site> = sites.iter().filter(|s| view_value(view, &s.raw).unwrap_or(0) > 0).collect();
        v.sort_by_key(|s| std::cmp::Reverse(view_value(view, &s.raw).unwrap_or(0)));
        let total: u64 = sites.iter().map(|s| view_value(view, &s.raw).unwrap_or(0)).sum();
        let _ = writeln!(out, "\ntop call sites by bytes {title} (total {}):", human_bytes(total));
        let _ = writeln!(
            out,
            "{:>11} {:>6} {:>11} {:>11} {:>9} {:>10} {:>5}  call site (allocating function; its caller)",
            title.split(' ').next().unwrap_or(""),
            "share",
            "allocated",
            "freed",
            "remote",
            "mean-size",
            "ranks"
        );
        if v.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for s in v.iter().take(top) {
            let value = view_value(view, &s.raw).unwrap_or(0);
            let parent = s.stack.len().checked_sub(2).map(|i| s.stack[i].as_str());
            let _ = writeln!(
                out,
                "{:>11} {:>5.1}% {:>11} {:>11} {:>9} {:>10} {:>5}  {}{}",
                human_bytes(value),
                100.0 * value as f64 / total.max(1) as f64,
                human_bytes(s.raw.alloc),
                human_bytes(s.raw.freed),
                s.remote_share().map_or("-".to_string(), |r| format!("{:.1}%", 100.0 * r)),
                human_bytes(s.raw.sizes.checked_div(s.raw.samples).unwrap_or(0)),
                s.ranks,
                s.caller(),
                parent.map(|p| format!("; from {p}")).unwrap_or_default()
            );
        }
    }
    out
}

/// The view's symbolised collapsed stacks (`frame;frame;frame bytes`, outermost first).
pub fn collapsed(sites: &[Site], view: &str) -> String {
    let mut out = String::new();
    for s in sites {
        let v = view_value(view, &s.raw).unwrap_or(0);
        if v > 0 {
            let _ = writeln!(out, "{} {v}", s.stack.join(";"));
        }
    }
    out
}

/// A flame graph SVG of the view.
pub fn flame_graph(sites: &[Site], view: &str, title: &str) -> Result<String, String> {
    let text = collapsed(sites, view);
    if text.is_empty() {
        return Err(format!("report: no bytes in the `{view}` view: no flame graph"));
    }
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = title.to_string();
    opt.count_name = "bytes".into();
    opt.name_type = "Call site:".into();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opt, text.lines(), &mut svg)
        .map_err(|e| format!("report: flame graph: {e}"))?;
    String::from_utf8(svg).map_err(|e| format!("report: flame graph: {e}"))
}

/// `domalloc report --prof`.
pub fn main(args: &ReportArgs) -> Result<u8, Failure> {
    let view = args.view.as_str();
    if view_value(view, &RawSite::default()).is_none() {
        return Err(format!("report: unknown view `{view}` (alloc, live, peak, remote)"));
    }
    let mut profiles = Vec::new();
    for f in &args.files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("report: {}: {e}", f.display()))?;
        profiles.push(parse(f, &text).map_err(|e| format!("report: {}: {e}", f.display()))?);
    }
    let mut sym = Symbolizer::default();
    let sites = merge(&profiles, &mut sym);
    if let Some(p) = &args.collapsed {
        std::fs::write(p, collapsed(&sites, view)).map_err(|e| format!("report: cannot write {}: {e}", p.display()))?;
    }
    if let Some(p) = &args.svg {
        let title = format!(
            "domalloc heap profile: bytes {} ({} profile(s))",
            match view {
                "alloc" => "allocated",
                "live" => "live at the end",
                "peak" => "live at the peak",
                _ => "freed on another node",
            },
            profiles.len()
        );
        std::fs::write(p, flame_graph(&sites, view, &title)?)
            .map_err(|e| format!("report: cannot write {}: {e}", p.display()))?;
    }
    print!("{}", tables(&sites, &profiles, args.top));
    for (p, what) in [(&args.collapsed, "collapsed stacks"), (&args.svg, "flame graph")] {
        if let Some(p) = p {
            println!("{what} ({view}): {}", p.display());
        }
    }
    Ok(0)
}
