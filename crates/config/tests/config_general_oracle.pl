#!/usr/bin/env perl
# Prints the tree Config::General reads from the file named on the command
# line, as canonical JSON, with the options Hydra uses plus -IncludeGlob.
# Exits 1 with the error on stderr if Config::General refuses the file.
use strict;
use warnings;
use Config::General;
use JSON::PP;

my $file = shift @ARGV or die "usage: $0 FILE\n";
my %config = eval {
    Config::General->new(
        -ConfigFile       => $file,
        -UseApacheInclude => 1,
        -IncludeAgain     => 1,
        -IncludeRelative  => 1,
        -IncludeGlob      => 1,
    )->getall;
};
if ($@) {
    print STDERR $@;
    exit 1;
}
print JSON::PP->new->canonical->allow_nonref->encode(\%config), "\n";
