#!/bin/sh
# cpu_flags.sh: the -march flag for this machine's fast kernels, or nothing for the plain-C build.
#
# The kernels (common/simd.h) are written once; on an x86-64 CPU with AVX2 and FMA they compile to
# AVX2/FMA instructions (-march=x86-64-v3), everywhere else (ARM laptops and boards, older x86) to plain
# C that gives the same bits. `make PORTABLE=1` asks for plain C on any machine.
case "$(uname -m)" in
    x86_64|amd64) ;;
    *) exit 0 ;;
esac
case "$(uname -s)" in
    Linux)
        flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) ;;
    Darwin)
        flags="$(sysctl -n machdep.cpu.features machdep.cpu.leaf7_features 2>/dev/null | tr 'A-Z' 'a-z')" ;;
    *) flags="" ;;
esac
case " $flags " in
    *" avx2 "*) case " $flags " in *" fma "*) echo "-march=x86-64-v3" ;; esac ;;
esac
exit 0
