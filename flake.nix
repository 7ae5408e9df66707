{
  description = "nix8s: declarative NixOS k3s clusters from one flake";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-parts.url = "github:hercules-ci/flake-parts";
    flake-parts.inputs.nixpkgs-lib.follows = "nixpkgs";
    disko.url = "github:nix-community/disko";
    disko.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = inputs@{ flake-parts, ... }:
    flake-parts.lib.mkFlake { inherit inputs; } {
      systems = [ "x86_64-linux" "aarch64-linux" ];

      flake = {
        # The pure core: validate, plan, nixos, exportable, schema (docs/core.md).
        lib = import ./lib;
        # The flake module, with this flake's disko and nixpkgs as fallbacks for flakes that have no such inputs
        # (the workspace flake nix8sd generates has only nix8s).
        flakeModules.default = {
          _file = "${toString ./.}/flake.nix#flakeModules.default";
          imports = [ ./modules/flake ];
          nix8s.defaultInputs = { inherit (inputs) nixpkgs disko; };
        };
        nixosModules.default = ./modules/nixos;
        nixosModules.nix8sd = ./deploy/nixos-module.nix;
      };

      perSystem = { pkgs, ... }: {
        packages.default = pkgs.callPackage ./modules/flake/nix8s-package.nix { };
      };
    };
}
