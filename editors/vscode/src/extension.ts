// The domarkx extension: starts `domarkx lsp` for Markdown files and hands the editor
// over to it. Everything else (diagnostics, hovers, completion, the code lenses and the
// commands they run) comes from the server; see docs/editors.md.
import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;

function serverOptions(): ServerOptions {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const configured = vscode.workspace
    .getConfiguration("domarkx")
    .get<string[]>("server.command", ["domarkx", "lsp"]);
  // `${workspaceFolder}` in the setting: the first folder of the workspace.
  const [command, ...args] = configured.map((part) =>
    folder ? part.split("${workspaceFolder}").join(folder) : part,
  );
  return { command, args, options: { cwd: folder } };
}

function makeClient(): LanguageClient {
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "markdown" }],
    outputChannelName: "domarkx",
  };
  return new LanguageClient("domarkx", "domarkx", serverOptions(), clientOptions);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  client = makeClient();
  context.subscriptions.push(
    vscode.commands.registerCommand("domarkx.restartServer", async () => {
      // A new client reads the setting again (another interpreter, another venv).
      await client?.stop();
      client = makeClient();
      await client.start();
    }),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("domarkx.server.command")) {
        void vscode.commands.executeCommand("domarkx.restartServer");
      }
    }),
  );
  await client.start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
