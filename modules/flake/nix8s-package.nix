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
  # `go mod vendor` of go.mod/go.sum; recompute when they change (nix build prints the right one).
  vendorHash = lib.fakeHash;
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
