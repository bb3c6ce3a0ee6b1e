# A first jobset: one job that needs nothing but /bin/sh, so it builds on
# any machine with Nix, without nixpkgs and without a network.
{ ... }:
{
  hello = derivation {
    name = "hello";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo 'Hello from hydra' > $out" ];
  };
}
