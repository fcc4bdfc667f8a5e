//! `barnes`: a Barnes-Hut n-body simulation in the shape of the SPLASH-2 `barnes` that
//! mimalloc-bench runs (one thread, `barnes < input`: 163840 bodies, 4 steps).
//!
//! How the real program uses the heap, which this workload copies: at start it mallocs a few
//! big tables — the bodies, a cell table (`fcells * maxleaf` cells), a leaf table
//! (`fleaves * nbody` leaves) and pointer tables — and never frees them. Every step rebuilds
//! the octree by handing out cells and leaves from those tables in order (a bump pointer that
//! is reset each step), computes centres of mass bottom-up, walks the tree once per body for
//! the force (the cell-opening test `size^2 < tol^2 * d^2`), and moves the bodies. So the
//! allocator is not called in the loop at all: what it decides is *where* the big tables live —
//! fresh mappings or recycled ones, page faults on first touch, transparent huge pages or
//! 4 KiB pages (the random tree walk over tens of MiB is TLB-bound), alignment of the tables.
//! That is what makes barnes differ between allocators (1.41x in the issue), not malloc speed.
//!
//! Checks: every body is in exactly one leaf; the root's mass is the total mass; the tree force
//! on 32 sampled bodies is within 10% (RMS) of the direct sum; the result (positions after the
//! last step) is a checksum that must be the same under every allocator.

// 3-vector arithmetic over a component index `d` reads like the physics it is.
#![allow(clippy::needless_range_loop)]

use rand::Rng;

use super::Workload;
use crate::common::{self, Outcome, Params};

/// Registry entry.
pub const WORKLOAD: Workload = Workload {
    name: "barnes",
    summary: "Barnes-Hut n-body (1 thread): big malloc'd cell/leaf tables, tree rebuilt from them each step",
    help: "barnes: a Barnes-Hut n-body simulation in the shape of SPLASH-2 barnes (mimalloc-bench).\n\
\n\
One thread. Like the real program it mallocs a few big tables at start (bodies, cells\n\
fcells*maxleaf, leaves fleaves*nbody, pointer tables) and never frees them; each of 4 steps\n\
rebuilds the octree by taking cells and leaves from the tables in order, computes centres of\n\
mass, walks the tree once per body for the force (opening test size^2 < tol^2 d^2, tol 1.0,\n\
eps 0.05) and moves the bodies (leapfrog, dt 0.025). Plummer-model bodies.\n\
\n\
Stresses: where the allocator puts big, sparsely touched tables (page faults, huge pages vs\n\
4 KiB pages and TLB reach in the random tree walk), not malloc speed: barnes calls malloc only\n\
at start. Checks: every body in one leaf, root mass = total mass, tree forces on 32 sampled\n\
bodies within 10% RMS of the direct sum; final positions are the checksum.\n\
Work: 50000 bodies x 4 steps at --scale 1 (the real input has 163840).",
    run,
    knobs: &[],
};

const NSUB: usize = 8;
const LEAF_MAX: usize = 10; // SPLASH-2's MAX_BODIES_PER_LEAF
const FCELLS: f64 = 2.0;
const FLEAVES: f64 = 5.0;
const STEPS: usize = 4;
const DT: f64 = 0.025;
const EPS2: f64 = 0.05 * 0.05;
const TOL2: f64 = 1.0;
const BASE_BODIES: u64 = 50_000;

#[derive(Clone, Copy)]
#[repr(C)]
struct Body {
    pos: [f64; 3],
    vel: [f64; 3],
    acc: [f64; 3],
    mass: f64,
    cost: u32,
}

/// A tree node: a cell (children) or a leaf (bodies). Same layout idea as SPLASH-2's: the
/// mass and centre of mass first, then the links.
#[repr(C)]
struct Cell {
    mass: f64,
    pos: [f64; 3],
    /// Child index + 1 into the cell table (`> 0`) or -(leaf index + 1) (`< 0`); 0 = empty.
    sub: [i32; NSUB],
}

#[repr(C)]
struct Leaf {
    mass: f64,
    pos: [f64; 3],
    n: u32,
    bodies: [u32; LEAF_MAX],
}

/// A malloc'd table of `cap` T's handed out in order.
struct Table<T> {
    p: *mut T,
    cap: usize,
    used: usize,
}

impl<T> Table<T> {
    fn new(cap: usize) -> Table<T> {
        Table { p: common::xmalloc(cap * std::mem::size_of::<T>()) as *mut T, cap, used: 0 }
    }
    fn take(&mut self, v: T) -> Result<usize, String> {
        if self.used == self.cap {
            return Err(format!("barnes: table of {} entries is full (increase fcells/fleaves)", self.cap));
        }
        // SAFETY: used < cap; the slot is inside the malloc'd table.
        unsafe { self.p.add(self.used).write(v) };
        self.used += 1;
        Ok(self.used - 1)
    }
    fn at(&self, i: usize) -> &T {
        debug_assert!(i < self.used);
        // SAFETY: i < used <= cap and slot i was written by take().
        unsafe { &*self.p.add(i) }
    }
    fn at_mut(&mut self, i: usize) -> &mut T {
        // SAFETY: as in at(); &mut self gives exclusive access.
        unsafe { &mut *self.p.add(i) }
    }
}

impl<T> Drop for Table<T> {
    fn drop(&mut self) {
        // SAFETY: p came from malloc.
        unsafe { libc::free(self.p.cast()) };
    }
}

struct Tree {
    cells: Table<Cell>,
    leaves: Table<Leaf>,
    min: [f64; 3],
    size: f64,
}

fn octant(pos: &[f64; 3], centre: &[f64; 3]) -> usize {
    (0..3).fold(0, |k, d| k | (usize::from(pos[d] >= centre[d]) << d))
}

impl Tree {
    fn new_cell(&mut self) -> Result<usize, String> {
        self.cells.take(Cell { mass: 0.0, pos: [0.0; 3], sub: [0; NSUB] })
    }

    fn new_leaf(&mut self) -> Result<usize, String> {
        self.leaves.take(Leaf { mass: 0.0, pos: [0.0; 3], n: 0, bodies: [0; LEAF_MAX] })
    }

    /// Inserts body `b` under the root; splits full leaves into cells.
    fn insert(&mut self, bodies: &[Body], b: u32) -> Result<(), String> {
        let pos = bodies[b as usize].pos;
        let (mut cell, mut centre, mut half) = (0usize, [0.0; 3], self.size / 2.0);
        for d in 0..3 {
            centre[d] = self.min[d] + half;
        }
        for _depth in 0..64 {
            let k = octant(&pos, &centre);
            let child = self.cells.at(cell).sub[k];
            half /= 2.0;
            let next_centre = std::array::from_fn(|d| centre[d] + if k >> d & 1 == 1 { half } else { -half });
            if child == 0 {
                let l = self.new_leaf()?;
                let leaf = self.leaves.at_mut(l);
                leaf.bodies[0] = b;
                leaf.n = 1;
                self.cells.at_mut(cell).sub[k] = -(l as i32 + 1);
                return Ok(());
            }
            if child > 0 {
                cell = child as usize - 1;
                centre = next_centre;
                continue;
            }
            let l = (-child - 1) as usize;
            let n = self.leaves.at(l).n as usize;
            if n < LEAF_MAX {
                let leaf = self.leaves.at_mut(l);
                leaf.bodies[n] = b;
                leaf.n += 1;
                return Ok(());
            }
            // Split: a new cell takes the leaf's bodies (SPLASH-2 reuses the leaf for the
            // first body's octant).
            let c = self.new_cell()?;
            self.cells.at_mut(cell).sub[k] = c as i32 + 1;
            let moved: Vec<u32> = self.leaves.at(l).bodies[..n].to_vec();
            self.leaves.at_mut(l).n = 0;
            let mut reused = false;
            for m in moved {
                let kk = octant(&bodies[m as usize].pos, &next_centre);
                let slot = self.cells.at(c).sub[kk];
                let target = if slot < 0 {
                    (-slot - 1) as usize
                } else if !reused {
                    reused = true;
                    self.cells.at_mut(c).sub[kk] = -(l as i32 + 1);
                    l
                } else {
                    let nl = self.new_leaf()?;
                    self.cells.at_mut(c).sub[kk] = -(nl as i32 + 1);
                    nl
                };
                let leaf = self.leaves.at_mut(target);
                leaf.bodies[leaf.n as usize] = m;
                leaf.n += 1;
            }
            cell = c;
            centre = next_centre;
        }
        Err("barnes: tree deeper than 64 levels (coincident bodies?)".into())
    }

    /// Centres of mass, bottom-up (cells are created after their parents, so reverse order).
    fn centre_of_mass(&mut self, bodies: &[Body]) {
        for l in 0..self.leaves.used {
            let leaf = self.leaves.at_mut(l);
            let (mut m, mut p) = (0.0, [0.0; 3]);
            for &b in &leaf.bodies[..leaf.n as usize] {
                let body = &bodies[b as usize];
                m += body.mass;
                for d in 0..3 {
                    p[d] += body.mass * body.pos[d];
                }
            }
            leaf.mass = m;
            leaf.pos = if m > 0.0 { p.map(|x| x / m) } else { p };
        }
        for c in (0..self.cells.used).rev() {
            let (mut m, mut p) = (0.0, [0.0; 3]);
            for k in 0..NSUB {
                let s = self.cells.at(c).sub[k];
                let (cm, cp) = match s {
                    0 => continue,
                    s if s > 0 => (self.cells.at(s as usize - 1).mass, self.cells.at(s as usize - 1).pos),
                    s => (self.leaves.at((-s - 1) as usize).mass, self.leaves.at((-s - 1) as usize).pos),
                };
                m += cm;
                for d in 0..3 {
                    p[d] += cm * cp[d];
                }
            }
            let cell = self.cells.at_mut(c);
            cell.mass = m;
            cell.pos = if m > 0.0 { p.map(|x| x / m) } else { p };
        }
    }

    /// The acceleration on body `b` from the tree (and the number of interactions). `stack` is
    /// scratch space (kept between calls: the real program recurses and does not allocate).
    fn force(&self, bodies: &[Body], b: usize, stack: &mut Vec<(i32, f64)>) -> ([f64; 3], u32) {
        let me = bodies[b].pos;
        let mut acc = [0.0; 3];
        let mut n = 0u32;
        let mut add = |m: f64, p: &[f64; 3]| {
            let dr = [p[0] - me[0], p[1] - me[1], p[2] - me[2]];
            let r2 = dr[0] * dr[0] + dr[1] * dr[1] + dr[2] * dr[2] + EPS2;
            let inv = m / (r2 * r2.sqrt());
            for d in 0..3 {
                acc[d] += dr[d] * inv;
            }
            n += 1;
        };
        // Explicit stack of (node, size of its cube).
        stack.clear();
        stack.push((1, self.size));
        while let Some((s, size)) = stack.pop() {
            if s > 0 {
                let c = self.cells.at(s as usize - 1);
                let dr = [c.pos[0] - me[0], c.pos[1] - me[1], c.pos[2] - me[2]];
                let d2 = dr[0] * dr[0] + dr[1] * dr[1] + dr[2] * dr[2];
                if size * size < TOL2 * d2 {
                    add(c.mass, &c.pos);
                } else {
                    for &k in c.sub.iter().rev() {
                        if k != 0 {
                            stack.push((k, size / 2.0));
                        }
                    }
                }
            } else {
                let l = self.leaves.at((-s - 1) as usize);
                for &o in &l.bodies[..l.n as usize] {
                    if o as usize != b {
                        add(bodies[o as usize].mass, &bodies[o as usize].pos);
                    }
                }
            }
        }
        (acc, n)
    }
}

/// Plummer-model bodies (as SPLASH-2's testdata: half the bodies, plus a copy offset by 4).
fn plummer(n: usize, seed: u64) -> Vec<Body> {
    let mut rng = common::rng(seed, 0xba27e5);
    let rsc = 9.0 * std::f64::consts::PI / 16.0;
    let vsc = (1.0 / rsc).sqrt();
    let shell = |rng: &mut rand::rngs::SmallRng, rad: f64| loop {
        let v: [f64; 3] = std::array::from_fn(|_| rng.gen_range(-1.0..1.0));
        let r2: f64 = v.iter().map(|x| x * x).sum();
        if r2 <= 1.0 && r2 > 1e-12 {
            let s = rad / r2.sqrt();
            return v.map(|x| x * s);
        }
    };
    let half = n.div_ceil(2);
    let mut bodies = Vec::with_capacity(n);
    for _ in 0..half {
        let r = loop {
            let r = 1.0 / (rng.gen_range(0.0f64..0.999).powf(-2.0 / 3.0) - 1.0).sqrt();
            if r <= 9.0 {
                break r;
            }
        };
        let pos = shell(&mut rng, rsc * r);
        let x = loop {
            let x: f64 = rng.gen_range(0.0..1.0);
            let y: f64 = rng.gen_range(0.0..0.1);
            if y <= x * x * (1.0 - x * x).powf(3.5) {
                break x;
            }
        };
        let v = std::f64::consts::SQRT_2 * x / (1.0 + r * r).powf(0.25);
        let vel = shell(&mut rng, vsc * v);
        bodies.push(Body { pos, vel, acc: [0.0; 3], mass: 1.0 / n as f64, cost: 1 });
    }
    for i in 0..n - half {
        let mut b = bodies[i];
        b.pos = b.pos.map(|x| x + 4.0);
        bodies.push(b);
    }
    bodies
}

fn bounds(bodies: &[Body]) -> ([f64; 3], f64) {
    let mut lo = [f64::MAX; 3];
    let mut hi = [f64::MIN; 3];
    for b in bodies {
        for d in 0..3 {
            lo[d] = lo[d].min(b.pos[d]);
            hi[d] = hi[d].max(b.pos[d]);
        }
    }
    let side = (0..3).map(|d| hi[d] - lo[d]).fold(0.0, f64::max);
    (lo.map(|x| x - side / 100_000.0), 1.00002 * side)
}

/// Checks the tree (body count, mass) and the force accuracy on a sample of bodies.
fn check(tree: &Tree, bodies: &[Body], step: usize) -> Result<(), String> {
    let in_leaves: u64 = (0..tree.leaves.used).map(|l| u64::from(tree.leaves.at(l).n)).sum();
    if in_leaves != bodies.len() as u64 {
        return Err(format!("barnes step {step}: {in_leaves} bodies in leaves, {} bodies", bodies.len()));
    }
    let total: f64 = bodies.iter().map(|b| b.mass).sum();
    if (tree.cells.at(0).mass - total).abs() > 1e-9 * total {
        return Err(format!("barnes step {step}: root mass {} != total {total}", tree.cells.at(0).mass));
    }
    let (mut err2, mut ref2) = (0.0, 0.0);
    for k in 0..32 {
        let b = k * bodies.len() / 32;
        let (tree_acc, _) = tree.force(bodies, b, &mut Vec::new());
        let mut direct = [0.0; 3];
        for (o, ob) in bodies.iter().enumerate() {
            if o != b {
                let dr: [f64; 3] = std::array::from_fn(|d| ob.pos[d] - bodies[b].pos[d]);
                let r2 = dr.iter().map(|x| x * x).sum::<f64>() + EPS2;
                let inv = ob.mass / (r2 * r2.sqrt());
                for d in 0..3 {
                    direct[d] += dr[d] * inv;
                }
            }
        }
        err2 += (0..3).map(|d| (tree_acc[d] - direct[d]).powi(2)).sum::<f64>();
        ref2 += direct.iter().map(|x| x * x).sum::<f64>();
    }
    let rel = (err2 / ref2).sqrt();
    if rel.is_nan() || rel > 0.10 {
        return Err(format!("barnes step {step}: tree force RMS error {rel:.3} vs the direct sum (> 0.10)"));
    }
    Ok(())
}

fn run(p: &Params) -> Result<Outcome, String> {
    let n = p.scaled(BASE_BODIES, 64) as usize;
    // The heap use of the real program: body table, cell and leaf tables, pointer tables.
    let mut bodies = plummer(n, p.seed);
    let maxleaf = (FLEAVES * n as f64) as usize;
    let maxcell = (FCELLS * maxleaf as f64) as usize;
    let order = Table::<u32>::new(n + maxleaf * LEAF_MAX); // SPLASH-2's mybodytab
    let mut tree = Tree { cells: Table::new(maxcell), leaves: Table::new(maxleaf), min: [0.0; 3], size: 0.0 };
    let (mut interactions, mut max_cells, mut max_leaves) = (0u64, 0, 0);
    let mut stack = Vec::with_capacity(1024);
    for step in 0..STEPS {
        (tree.min, tree.size) = bounds(&bodies);
        tree.cells.used = 0;
        tree.leaves.used = 0;
        tree.new_cell()?;
        for b in 0..n as u32 {
            tree.insert(&bodies, b)?;
        }
        tree.centre_of_mass(&bodies);
        if step == 0 || step + 1 == STEPS {
            check(&tree, &bodies, step)?;
        }
        max_cells = max_cells.max(tree.cells.used);
        max_leaves = max_leaves.max(tree.leaves.used);
        // Bodies in tree order (the real program's mybodytab), then forces and the leapfrog.
        let mut k = 0;
        for l in 0..tree.leaves.used {
            let leaf = tree.leaves.at(l);
            for &b in &leaf.bodies[..leaf.n as usize] {
                // SAFETY: k < n <= the table's capacity.
                unsafe { order.p.add(k).write(b) };
                k += 1;
            }
        }
        for i in 0..n {
            // SAFETY: the first n slots were written above.
            let b = unsafe { *order.p.add(i) } as usize;
            let (acc, cnt) = tree.force(&bodies, b, &mut stack);
            interactions += u64::from(cnt);
            let body = &mut bodies[b];
            if step > 0 {
                for d in 0..3 {
                    body.vel[d] += (acc[d] - body.acc[d]) * DT / 2.0;
                }
            }
            body.acc = acc;
            body.cost = cnt;
        }
        for body in bodies.iter_mut() {
            for d in 0..3 {
                let v1 = body.vel[d] + body.acc[d] * DT / 2.0;
                body.pos[d] += v1 * DT;
                body.vel[d] = v1 + body.acc[d] * DT / 2.0;
            }
        }
    }
    let checksum = bodies.iter().fold(0u64, |h, b| {
        common::mix(h ^ b.pos[0].to_bits() ^ b.pos[1].to_bits().rotate_left(21) ^ b.pos[2].to_bits().rotate_left(42))
    });
    Ok(Outcome {
        ops: 10,
        checksum,
        extra: format!("bodies={n} steps={STEPS} cells={max_cells} leaves={max_leaves} interactions={interactions}"),
    })
}
