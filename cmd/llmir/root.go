package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"llmir/internal/buildinfo"
)

// newRootCmd builds the whole command tree. It holds no globals so that
// tests can build as many independent trees as they like.
func newRootCmd() *cobra.Command {
	v := viper.New()
	root := &cobra.Command{
		Use:   "llmir",
		Short: "llmir compiles and autotunes LLM inference kernels",
		Long: `llmir reads a model (a Hugging Face config.json, a preset, or LLMIR text),
splits it into kernels, searches each kernel's schedule space by measuring on the
real device, and records every measurement in a tuning database.

Configuration precedence: flag > environment (LLMIR_*, '-' becomes '_') >
llmir.yaml (in . then $XDG_CONFIG_HOME/llmir) > defaults.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return initConfig(cmd, v)
		},
	}
	root.PersistentFlags().String("config", "", "config file (default: ./llmir.yaml, then $XDG_CONFIG_HOME/llmir/llmir.yaml)")
	root.PersistentFlags().String("db", defaultDBPath(), "tuning database file")
	root.PersistentFlags().IntP("verbose", "v", 0, "verbosity level")

	root.AddCommand(
		newVersionCmd(),
		newKVCmd(),
		newImportCmd(),
		newOptCmd(),
		newTasksCmd(),
		newDBCmd(),
		newBenchCmd(),
		newDashboardCmd(),
		newTuneCmd(),
		newCompileCmd(),
		newCudaCmd(),
	)
	return root
}

// defaultDBPath is $XDG_CACHE_HOME/llmir/tuning.db (~/.cache/llmir/tuning.db).
func defaultDBPath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "tuning.db"
	}
	return filepath.Join(dir, "llmir", "tuning.db")
}

// initConfig reads llmir.yaml and the LLMIR_* environment into v and copies
// every value onto the flags the user did not set, so that commands read
// only their flags and the precedence holds everywhere.
func initConfig(cmd *cobra.Command, v *viper.Viper) error {
	cfgFile, _ := cmd.Flags().GetString("config")
	if cfgFile == "" {
		cfgFile = findConfigFile()
	}
	if cfgFile != "" {
		v.SetConfigFile(cfgFile)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("config %s: %w", cfgFile, err)
		}
	}
	v.SetEnvPrefix("LLMIR")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()

	var bindErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || bindErr != nil || f.Name == "config" || f.Name == "help" {
			return
		}
		// A command's own key ("bench.threads") wins over the bare key.
		for _, key := range []string{cmd.Name() + "." + f.Name, f.Name} {
			if !v.IsSet(key) {
				continue
			}
			val := v.Get(key)
			if s, ok := val.([]any); ok {
				parts := make([]string, len(s))
				for i, p := range s {
					parts[i] = fmt.Sprint(p)
				}
				val = strings.Join(parts, ",")
			}
			if err := cmd.Flags().Set(f.Name, fmt.Sprint(val)); err != nil {
				bindErr = fmt.Errorf("config key %q: %w", key, err)
			}
			return
		}
	})
	return bindErr
}

// findConfigFile looks for llmir.yaml in . and then $XDG_CONFIG_HOME/llmir.
// The search is by exact name: viper's own search would also take a file
// called just "llmir", such as the binary itself.
func findConfigFile() string {
	dirs := []string{"."}
	if dir, err := os.UserConfigDir(); err == nil {
		dirs = append(dirs, filepath.Join(dir, "llmir"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "llmir.yaml")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print llmir's version",
		Example: "  llmir version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "llmir", buildinfo.Version())
			return nil
		},
	}
}
