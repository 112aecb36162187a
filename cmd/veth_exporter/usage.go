package main

import "github.com/alecthomas/kingpin/v2"

// usageTemplate is kingpin's long help for `veth_exporter --help` (every
// command with its flags: most runs use the default command, serve, whose
// flags would otherwise hide behind `serve --help`), and for `COMMAND
// --help` the command's own flags and arguments first, then the global
// flags: an operator asking how to run clean wants clean's flags, not 300
// lines of serve's.
const usageTemplate = `{{define "FormatCommand" -}}
{{if .FlagSummary}} {{.FlagSummary}}{{end -}}
{{range .Args}}{{if not .Hidden}} {{if not .Required}}[{{end}}{{if .PlaceHolder}}{{.PlaceHolder}}{{else}}<{{.Name}}>{{end}}{{if .Value|IsCumulative}}...{{end}}{{if not .Required}}]{{end}}{{end}}{{end -}}
{{end -}}

{{define "FormatCommands" -}}
{{range .FlattenedCommands -}}
{{if not .Hidden -}}
  {{.FullCommand}}{{template "FormatCommand" .}}
{{.Help|Wrap 4}}
{{with .Flags|FlagsToTwoColumns}}{{FormatTwoColumnsWithIndent . 4 2}}{{end}}
{{end -}}
{{end -}}
{{end -}}

{{define "FormatUsage" -}}
{{template "FormatCommand" .}}{{if .Commands}} <command> [<args> ...]{{end}}
{{if .Help}}
{{.Help|Wrap 0 -}}
{{end -}}

{{end -}}

{{with .Context.SelectedCommand -}}
usage: {{$.App.Name}} {{.FullCommand}} [<flags>]{{range .Args}}{{if not .Hidden}} {{if not .Required}}[{{end}}<{{.Name}}>{{if .Value|IsCumulative}}...{{end}}{{if not .Required}}]{{end}}{{end}}{{end}}

{{.Help|Wrap 0}}
{{with .Flags|FlagsToTwoColumns -}}
Flags of {{$.Context.SelectedCommand.FullCommand}}:
{{FormatTwoColumns .}}
{{end -}}
{{with .Args|ArgsToTwoColumns -}}
Args:
{{FormatTwoColumns .}}
{{end -}}
Global flags (every command):
{{$.App.Flags|FlagsToTwoColumns|FormatTwoColumns}}
{{- else -}}
usage: {{.App.Name}}{{template "FormatUsage" .App}}
{{if .Context.Flags -}}
Flags:
{{.Context.Flags|FlagsToTwoColumns|FormatTwoColumns}}
{{end -}}
{{if .App.Commands -}}
Commands:
{{template "FormatCommands" .App}}
{{end -}}
{{end -}}
`

// setUsage makes app print [usageTemplate].
func setUsage(app *kingpin.Application) {
	app.UsageTemplate(usageTemplate)
}
