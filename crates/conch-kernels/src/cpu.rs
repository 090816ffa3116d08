//! Run-time instruction-set detection and the kernel level matrix code runs at.
//!
//! Kernels come in levels ([`Isa`]); the best level the CPU supports is used unless a lower
//! one is asked for, through the `CONCH_ISA` environment variable (`scalar`, `avx2`, `avx512`,
//! `amx`, read once) or [`set_isa`]. Tests call the `*_with_isa` entry points to run every level.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Instruction-set extensions this crate cares about, as reported by the CPU and OS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub avx512bf16: bool,
    pub avxvnni: bool,
    pub amx_tile: bool,
    pub amx_int8: bool,
    pub amx_bf16: bool,
}

/// A kernel level, ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust; the reference the SIMD levels are tested against.
    Scalar,
    /// AVX2 + FMA + F16C (256-bit vectors, `vpmaddubsw` integer dots).
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (`vpdpbusd` integer dots), on top of [`Isa::Avx2`].
    Avx512,
    /// [`Isa::Avx512`] plus AMX int8 tile multiplies for products of many tokens (prefill).
    Amx,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(name.trim()))
    }

    fn from_u8(v: u8) -> Isa {
        Isa::ALL[v as usize]
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The features of the CPU this process runs on (detected once).
pub fn features() -> &'static CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    FEATURES.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    let (amx_tile, amx_int8, amx_bf16) = detect_amx();
    CpuFeatures {
        avx2: is_x86_feature_detected!("avx2"),
        fma: is_x86_feature_detected!("fma"),
        f16c: is_x86_feature_detected!("f16c"),
        avx512f: is_x86_feature_detected!("avx512f"),
        avx512bw: is_x86_feature_detected!("avx512bw"),
        avx512vl: is_x86_feature_detected!("avx512vl"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
        avx512bf16: is_x86_feature_detected!("avx512bf16"),
        avxvnni: is_x86_feature_detected!("avxvnni"),
        amx_tile,
        amx_int8,
        amx_bf16,
    }
}

/// AMX support from CPUID leaf 7 (std's detection of it is not stable yet), and whether the OS
/// enabled the tile state in XCR0 (bits 17 and 18). Using the tiles additionally needs
/// `arch_prctl(ARCH_REQ_XCOMP_PERM)` per process.
#[cfg(target_arch = "x86_64")]
fn detect_amx() -> (bool, bool, bool) {
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 || !is_x86_feature_detected!("xsave") {
        return (false, false, false);
    }
    let edx = __cpuid_count(7, 0).edx;
    // SAFETY: xgetbv(0) is valid when the OS enabled XSAVE (OSXSAVE), implied by the `xsave` check
    // together with std's own use of it for AVX detection.
    let os_tiles =
        is_x86_feature_detected!("avx") && unsafe { _xgetbv(0) } & (0b11 << 17) == (0b11 << 17);
    let bit = |b: u32| os_tiles && edx & (1 << b) != 0;
    (bit(24), bit(25), bit(22))
}

/// Asks Linux for permission to use the AMX tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`); it is granted per process and the tiles fault without it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn amx_permitted() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call that only changes this process's permitted xsave features;
    // the kernel clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn amx_permitted() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_permitted() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

/// The most capable level this CPU supports.
pub fn best_isa() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(|| {
        let f = features();
        if !(f.avx2 && f.fma && f.f16c) {
            Isa::Scalar
        } else if f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni {
            if f.amx_tile && f.amx_int8 && amx_permitted() {
                Isa::Amx
            } else {
                Isa::Avx512
            }
        } else {
            Isa::Avx2
        }
    })
}

/// Whether kernels of level `isa` can run here.
pub fn supports(isa: Isa) -> bool {
    isa <= best_isa()
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// The level kernels run at: the best supported, lowered by `CONCH_ISA` or [`set_isa`].
pub fn isa() -> Isa {
    let v = ACTIVE.load(Ordering::Relaxed);
    if v != UNSET {
        return Isa::from_u8(v);
    }
    let chosen = match std::env::var("CONCH_ISA")
        .ok()
        .as_deref()
        .and_then(Isa::from_name)
    {
        Some(wanted) => wanted.min(best_isa()),
        None => best_isa(),
    };
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Makes kernels run at `wanted`, or at the best supported level if `wanted` is beyond it.
/// Returns the level now in effect.
pub fn set_isa(wanted: Isa) -> Isa {
    let chosen = wanted.min(best_isa());
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse"), None);
    }

    #[test]
    fn best_level_is_consistent_with_features() {
        let f = features();
        assert!(supports(Isa::Scalar));
        assert_eq!(supports(Isa::Avx2), f.avx2 && f.fma && f.f16c);
        if supports(Isa::Avx512) {
            assert!(f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni);
        }
        if supports(Isa::Amx) {
            assert!(f.amx_tile && f.amx_int8);
        }
    }
}
