#!/usr/bin/perl
# translate.pl IN.cu OUT.cpp: the C++ the emulated build compiles for a .cu file
# (with -include tests/cuda_emu/cuda_emu.h). Only what g++ cannot parse changes,
# keeping every line where it was:
#   kernel<T><<<grid, block, shared, stream>>>(args)
#     -> ::cuda_emu::launch("kernel<T>", grid, block, shared, stream)(kernel<T>, args)
#   extern __shared__ T name[];
#     -> T* name = static_cast<T*>(::cuda_emu::dynamic_shared());
use strict;
use warnings;

die "usage: translate.pl IN.cu OUT.cpp\n" unless @ARGV == 2;
my ($in, $out) = @ARGV;
open(my $fh, '<', $in) or die "translate.pl: cannot read $in: $!\n";
my $s = do { local $/; <$fh> };
close $fh;

my $launches = ($s =~ s{\b([A-Za-z_]\w*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(}
                       {::cuda_emu::launch("$1", $2)($1, }gs);
$s =~ s{extern\s+__shared__\s+([\w:][\w:\s]*?)\s+(\w+)\s*\[\s*\]\s*;}
       {$1* $2 = static_cast<$1*>(::cuda_emu::dynamic_shared());}g;
die "translate.pl: $in: a launch is left that the pattern did not take\n" if $s =~ /<<</;

open(my $o, '>', "$out.tmp") or die "translate.pl: cannot write $out: $!\n";
print $o "#line 1 \"$in\"\n", $s;
close $o or die "translate.pl: cannot write $out: $!\n";
rename("$out.tmp", $out) or die "translate.pl: cannot rename to $out: $!\n";
