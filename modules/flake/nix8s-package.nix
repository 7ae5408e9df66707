# The Go tools (nix8s, nix8sd) built from this repository. The core is embedded in the binaries; what they run
# (nix-instantiate, ssh, nixos-anywhere, nixos-rebuild, sops) is put on PATH by the wrapper.
{ lib, buildGoModule, makeWrapper, nix, openssh, nixos-anywhere, nixos-rebuild, sops, age }:
buildGoModule {
  pname = "nix8s";
  version = "0.1.0";
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../go.mod
      ../../go.sum
      ../../nix8s.go
      ../../lib
      ../../cmd
      ../../internal
      ../../migrations
      ../../openapi
    ];
  };
  # NAR hash of `go mod vendor` for this go.mod/go.sum, computed with `nix hash path` (no nixpkgs here to
  # confirm it with a build); when go.mod changes, `nix build .#nix8s` prints the right one.
  vendorHash = "sha256-fbdNHA7Ysh8uEoOSE2IkiKuy/twHNt7jK2IR6B+GVqg=";
  subPackages = [ "cmd/nix8s" "cmd/nix8sd" ];
  nativeBuildInputs = [ makeWrapper ];
  # The tests need PostgreSQL, network namespaces and root; they run in this repository's CI instead.
  doCheck = false;
  postInstall = ''
    for b in $out/bin/*; do
      wrapProgram "$b" --suffix PATH : ${lib.makeBinPath [ nix openssh nixos-anywhere nixos-rebuild sops age ]}
    done
  '';
  meta = {
    description = "Declarative NixOS k3s clusters: validate, plan, install, roll out";
    mainProgram = "nix8s";
    license = lib.licenses.mit;
  };
}
